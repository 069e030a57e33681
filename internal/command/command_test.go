package command

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// run executes the root command as main would and returns its outputs and exit code.
func run(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code exitcode.Code) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	err := New(strings.NewReader(""), &out, &errOut).Run(context.Background(), append([]string{"hcpsnap"}, args...))
	return out.String(), errOut.String(), exitcode.Of(err)
}

func TestRoot(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   exitcode.Code
		wantStdout string
	}{
		{name: "help is a manual with the exit codes", args: []string{"--help"}, wantStdout: "EXIT CODES:"},
		{name: "no command prints help", args: nil, wantStdout: "COMMANDS:"},
		{name: "version", args: []string{"version"}, wantStdout: "hcpsnap "},
		{name: "version json", args: []string{"-o", "json", "version"}, wantStdout: `"message_type":"version"`},
		{name: "output from env", env: map[string]string{EnvOutput: "json"}, args: []string{"version"}, wantStdout: `"goVersion"`},
		{name: "unknown command", args: []string{"bogus"}, wantCode: exitcode.Usage},
		{name: "unknown flag", args: []string{"--bogus"}, wantCode: exitcode.Usage},
		{name: "bad log level", args: []string{"--log-level", "loud", "version"}, wantCode: exitcode.Usage},
		{name: "bad log format from env", env: map[string]string{EnvLogFormat: "xml"}, args: []string{"version"}, wantCode: exitcode.Usage},
		{name: "bad output", args: []string{"-o", "yaml", "version"}, wantCode: exitcode.Usage},
		{name: "markdown is for dry runs", args: []string{"-o", "markdown", "version"}, wantCode: exitcode.Usage},
		{name: "version takes no arguments", args: []string{"version", "extra"}, wantCode: exitcode.Usage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := run(t, tt.env, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stdout, tt.wantStdout) {
				t.Fatalf("stdout %q does not contain %q", stdout, tt.wantStdout)
			}
		})
	}
}

func TestVersionJSONIsOneObject(t *testing.T) {
	stdout, _, _ := run(t, nil, "-o", "json", "version")
	var v map[string]string
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("not one JSON object: %v: %q", err, stdout)
	}
	for _, k := range []string{"version", "commit", "goVersion", "platform"} {
		if v[k] == "" {
			t.Errorf("field %q empty in %v", k, v)
		}
	}
}
