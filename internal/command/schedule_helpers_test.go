package command

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v3"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// argsWith returns base followed by extra, base left as it is.
func argsWith(base []string, extra ...string) []string {
	return append(slices.Clone(base), extra...)
}

// argsWithout returns base without flag and the value after it.
func argsWithout(base []string, flag string) []string {
	var out []string
	for i := 0; i < len(base); i++ {
		if base[i] == flag {
			i++
			continue
		}
		out = append(out, base[i])
	}
	return out
}

// checkUsageError runs hcpsnap with args and fails unless it ends with
// exit 2 and one line containing want, having printed nothing.
func checkUsageError(t *testing.T, args []string, want string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := New(strings.NewReader(""), &out, &errOut).Run(context.Background(), append([]string{"hcpsnap"}, args...))
	if code := exitcode.Of(err); code != exitcode.Usage {
		t.Fatalf("exit code %d (%v), want %d", code, err, exitcode.Usage)
	}
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q should be one line containing %q", err, want)
	}
	if out.String() != "" {
		t.Errorf("stdout %q, want nothing", out.String())
	}
}

// checkPassThrough fails when a flag of the job's command (what: "backup",
// "verify") is neither passed through nor excluded with a reason, is both,
// or cannot be written as an argument, and when an excluded flag is not
// one of the command's: a flag added to the command later is not lost.
func checkPassThrough(t *testing.T, what string, commandFlags func() []cli.Flag, passThrough []string, excluded map[string]string) {
	t.Helper()
	for _, f := range commandFlags() {
		name := f.Names()[0]
		_, isExcluded := excluded[name]
		passed := slices.Contains(passThrough, name)
		switch {
		case isExcluded && passed:
			t.Errorf("--%s is both excluded and passed through", name)
		case !isExcluded && !passed:
			t.Errorf("%s flag --%s is neither passed through to the job nor excluded with a reason", what, name)
		}
		if passed {
			if _, err := formatFlag(name, f.Get()); err != nil {
				t.Error(err)
			}
		}
	}
	for name := range excluded {
		if !hasFlag(commandFlags(), name) {
			t.Errorf("excluded flag --%s is not a %s flag", name, what)
		}
	}
}
