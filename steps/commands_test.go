package steps

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/checkpoint"
)

// TestPrintedCommandsRunExactly pastes each printed command into a POSIX
// shell whose oc and hcpsnap only print their arguments, and checks that
// they receive exactly the values, whatever characters those hold.
func TestPrintedCommandsRunExactly(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	odd := "it's $(id); `x`"
	tests := []struct {
		name string
		cmd  string
		want []string
	}{
		{"pausedUntil back to a value", PausedUntilCommand("clusters", "example", &odd),
			[]string{"oc", "patch", "hostedcluster", "-n", "clusters", "example", "--type=merge", "-p", `{"spec":{"pausedUntil":"it's $(id); ` + "`x`" + `"}}`}},
		{"pausedUntil removed", PausedUntilCommand("clusters", "example", nil),
			[]string{"oc", "patch", "hostedcluster", "-n", "clusters", "example", "--type=merge", "-p", `{"spec":{"pausedUntil":null}}`}},
		{"scale", ScaleCommand("clusters-example", "kube apiserver", 3),
			[]string{"oc", "scale", "deployment", "-n", "clusters-example", "kube apiserver", "--replicas=3"}},
		{"remove the snapshot", RemoveSnapshotCommand("clusters-example", "etcd-0", "etcd", "/var/lib/data/x y.db"),
			[]string{"oc", "exec", "-n", "clusters-example", "etcd-0", "-c", "etcd", "--", "sh", "-c", "rm -f '/var/lib/data/x y.db' '/var/lib/data/x y.db'.*"}},
		{"resume", BackupCommand(checkpoint.Cluster{Namespace: "clusters", Name: "example"}, "resume"),
			[]string{"hcpsnap", "backup", "--cluster", "example", "--namespace", "clusters", "--resume"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := `oc() { printf '%s\0' oc "$@"; }; hcpsnap() { printf '%s\0' hcpsnap "$@"; }; ` + tt.cmd
			out, err := exec.Command(sh, "-c", script).Output()
			if err != nil {
				t.Fatalf("%s: %v", tt.cmd, err)
			}
			got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("%s\nran %q\nwant %q", tt.cmd, got, tt.want)
			}
		})
	}
}
