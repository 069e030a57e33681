package command

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// TestPruneBadInput: each bad policy or flag is one line on stderr and
// exit 2, before the bucket is opened (the bucket here does not exist).
func TestPruneBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"prune", "--bucket", "bkt"}, "policy is empty"},
		{[]string{"prune", "--bucket", "bkt", "--include-incomplete"}, "policy is empty"},
		{[]string{"prune", "--bucket", "bkt", "--keep-last", "-1"}, "--keep-last -1 is negative"},
		{[]string{"prune", "--bucket", "bkt", "--keep-weekly", "2", "--keep-monthly", "-2"}, "--keep-monthly -2 is negative"},
		{[]string{"prune", "--bucket", "bkt", "--keep-within", "forever"}, `--keep-within "forever" is not a duration`},
		{[]string{"prune", "--bucket", "bkt", "--keep-within", "-3h"}, "--keep-within -3h is negative"},
		{[]string{"prune", "--bucket", "bkt", "--keep-daily", "many"}, "keep-daily"},
		{[]string{"prune", "--keep-last", "1"}, "--bucket is required"},
		{[]string{"prune", "--bucket", "bkt", "--keep-last", "1", "--cluster", "Not_A_Name"}, "--cluster \"Not_A_Name\""},
		{[]string{"prune", "--bucket", "bkt", "--keep-last", "1", "extra"}, "takes no arguments"},
		{[]string{"backup", "--cluster", "c", "--bucket", "bkt", "--keep-last", "2"}, "apply to --prune"},
		{[]string{"backup", "--cluster", "c", "--bucket", "bkt", "--prune"}, "policy is empty"},
		{[]string{"backup", "--cluster", "c", "--bucket", "bkt", "--prune", "--keep-within", "2w"}, `"2w" is not a duration`},
		{[]string{"backup", "--cluster", "c", "--abandon", "--prune", "--keep-last", "1"}, "exclude each other"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			env := map[string]string{"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1", "HCPSNAP_BUCKET": ""}
			stdout, stderr, code := run(t, env, c.args...)
			if code != exitcode.Usage {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, exitcode.Usage, stderr)
			}
			_, err := runErr(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q should be one line containing %q", err, c.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

// runErr runs the root command and returns its error, whose message main
// prints as the one line of a failure.
func runErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := New(strings.NewReader(""), &out, &errOut).Run(context.Background(), append([]string{"hcpsnap"}, args...))
	return out.String(), err
}
