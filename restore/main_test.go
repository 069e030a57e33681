package restore

import (
	"flag"
	"os"
	"testing"
)

// TestMain bounds the minimization of new fuzz inputs to a few seconds
// unless -fuzzminimizetime is given: the seeds are whole renders of several
// kilobytes, and with Go's default of 60s a 30s fuzz run would spend all its
// time minimizing its first finding instead of exploring.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if f := flag.Lookup("test.fuzzminimizetime"); f != nil && !set {
		if err := f.Value.Set("3s"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
