package nodeagent

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary act as the sandbox helper: the real-sandbox tests re-execute it as
// `<test binary> sandbox-exec --spec ... -- cmd`, exactly as the agent re-executes its own binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == SandboxSubcommand {
		err := SandboxMain(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		var serr *SandboxError
		if errors.As(err, &serr) {
			os.Exit(serr.ExitCode())
		}
		os.Exit(125)
	}
	os.Exit(m.Run())
}
