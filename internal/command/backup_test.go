package command

import (
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// TestBackupUsageErrors checks that bad flags are refused before any I/O with
// exit 2 and one line that names the flag.
func TestBackupUsageErrors(t *testing.T) {
	base := []string{"backup", "--cluster", "example", "--bucket", "backups-bucket"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cluster missing", []string{"backup", "--bucket", "b-b-b"}, "--cluster is required"},
		{"bucket missing", []string{"backup", "--cluster", "example"}, "--bucket is required"},
		{"invalid cluster name", []string{"backup", "--cluster", "Bad_Name", "--bucket", "bucket"}, `--cluster "Bad_Name"`},
		{"invalid namespace", append(base, "--namespace", "a/b"), `--namespace "a/b"`},
		{"invalid member", append(base, "--member", "etcd 0"), `--member "etcd 0"`},
		{"invalid bucket", []string{"backup", "--cluster", "example", "--bucket", "No_Such"}, `--bucket "No_Such"`},
		{"unknown step", append(base, "--skip-steps", "snapshot-taken"), `unknown step "snapshot-taken"`},
		{"skipping scale-up", append(base, "--skip-steps", "scale-up-apiservers"), "would leave the control plane down"},
		{"skipping resume", append(base, "--skip-steps", "resume-reconciliation"), "would leave the control plane down"},
		{"pause timeout too short", append(base, "--pause-timeout", "10s"), "--pause-timeout 10s is out of range"},
		{"bad sse", append(base, "--sse", "rot13"), `--sse "rot13" is not supported`},
		{"kms key without kms", append(base, "--sse-kms-key-id", "k"), "--sse-kms-key-id needs --sse aws:kms"},
		{"key-out with sse", append(base, "--key-out", "/tmp/k", "--sse", "AES256"), "contradict"},
		{"dry-run with resume", append(base, "--dry-run", "--resume"), "cannot be combined"},
		{"markdown without dry-run", append([]string{"-o", "markdown"}, base...), "markdown is the format of a dry run"},
		{"part size too small", append(base, "--part-size-mib", "1"), "--part-size-mib 1 is out of range"},
		{"concurrency zero", append(base, "--concurrency", "0"), "--concurrency 0 is out of range"},
		{"ca bundle and insecure", append(base, "--s3-ca-bundle", "/x.pem", "--s3-insecure-skip-verify"), "contradict"},
		{"prefix with leading slash", append(base, "--prefix", "/abs"), `--prefix "/abs" is not a clean key prefix`},
		{"same prefix for keys", append(base, "--prefix", "p", "--key-prefix", "p"), "keep the key bundle apart"},
		{"relative snapshot dir", append(base, "--snapshot-dir", "data"), `--snapshot-dir "data" must be a clean absolute path`},
		{"relative etcdctl", append(base, "--etcdctl", "etcdctl"), `--etcdctl "etcdctl" must be a clean absolute path`},
		{"relative etcdutl", append(base, "--etcdutl", "bin/etcdutl"), `--etcdutl "bin/etcdutl" must be a clean absolute path`},
		{"snapshot dir that climbs", append(base, "--snapshot-dir", "/var/lib/../../etc"), "must be a clean absolute path"},
		{"skipping preflight", append(base, "--skip-steps", "preflight"), "preflight always runs"},
		{"skipping the clean-up", append(base, "--skip-steps", "cleanup-pod-file"), "would leave the snapshot file in the etcd pod"},
		{"abandon and resume", append(base, "--abandon", "--resume"), "exclude each other"},
		{"yes without abandon", append(base, "--yes"), "--yes only confirms --abandon"},
		{"abandon without a terminal", []string{"backup", "--cluster", "example", "--abandon"}, "stdin is not a terminal: add --yes"},
		{"resume with a bad flag value", []string{"backup", "--cluster", "example", "--resume", "--member", "Etcd_0"}, `--member "Etcd_0"`},
		{"no deployments offline", append(base, "--deployments", ""), "--deployments is empty"},
		{"online and holding the API down", append(base, "--online", "--hold-api-until-saved"), "exclude each other"},
		{"positional argument", append(base, "extra"), "takes no arguments"},
		{"unknown flag", append(base, "--bucket-name", "x"), "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errOut strings.Builder
			stdout, _, code := run(t, nil, tt.args...)
			if code != exitcode.Usage {
				t.Fatalf("exit code %d, want %d (usage)", code, exitcode.Usage)
			}
			err := New(strings.NewReader(""), &strings.Builder{}, &errOut).Run(t.Context(), append([]string{"hcpsnap"}, tt.args...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if stdout != "" {
				t.Fatalf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestBackupHelpListsSteps(t *testing.T) {
	stdout, _, code := run(t, nil, "backup", "--help")
	if code != exitcode.OK {
		t.Fatalf("exit %d", code)
	}
	for _, name := range stepNames() {
		if !strings.Contains(stdout, name) {
			t.Errorf("backup --help does not list step %s", name)
		}
	}
	for _, env := range []string{"HCPSNAP_CLUSTER", "HCPSNAP_BUCKET", "HCPSNAP_KEY_PREFIX", "HCPSNAP_SKIP_STEPS", "HCPSNAP_ETCDUTL"} {
		if !strings.Contains(stdout, env) {
			t.Errorf("backup --help does not mention %s", env)
		}
	}
}

// TestHelpSaysEncryptedOnlyWhereItIs: the key bundle is encrypted by S3 in
// the bucket (with --sse or the bucket's default), never in a --key-out
// file; the help must not promise more.
func TestHelpSaysEncryptedOnlyWhereItIs(t *testing.T) {
	for _, cmd := range []string{"backup", "restore", "backups"} {
		stdout, _, code := run(t, nil, cmd, "--help")
		if code != exitcode.OK {
			t.Fatalf("%s --help: exit %d", cmd, code)
		}
		text := strings.Join(strings.Fields(stdout), " ")
		for i := 0; ; {
			j := strings.Index(text[i:], "encrypted")
			if j < 0 {
				break
			}
			at := i + j
			around := text[max(0, at-60):min(len(text), at+60)]
			if !strings.Contains(around, "not encrypted") && !strings.Contains(around, "--sse") && !strings.Contains(around, "server-side") {
				t.Errorf("%s --help says encrypted where nothing encrypts: %q", cmd, around)
			}
			i = at + len("encrypted")
		}
	}
	stdout, _, _ := run(t, nil, "backup", "--help")
	if !strings.Contains(strings.Join(strings.Fields(stdout), " "), "The file is not encrypted") {
		t.Error("backup --help does not say that the --key-out file is not encrypted")
	}
}
