package command

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestLimitMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	debug.SetMemoryLimit(math.MaxInt64)

	t.Setenv("GOMEMLIMIT", "")
	limitMemory(8<<20, 4)
	if got, want := debug.SetMemoryLimit(-1), int64(5*8<<20+memoryHeadroom); got != want {
		t.Errorf("memory limit %d, want part buffers plus headroom %d", got, want)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "1GiB")
	limitMemory(8<<20, 4)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit %d although GOMEMLIMIT chose one", got)
	}
}
