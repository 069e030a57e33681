package management

import (
	"strings"
	"testing"
)

func TestCheckTargetDir(t *testing.T) {
	for _, tc := range []struct {
		dir        string
		allowTmpfs bool
		wantErr    string // substring; empty: accepted
		warns      bool
	}{
		{dir: DefaultTargetDir},
		{dir: "/home/core/backups/etcd"},
		{dir: "/mnt/etcd"},
		{dir: "/var/etcd-snapshots"},
		{dir: "/var/tmp/etcd"},
		{dir: "/var/home/core/etcd-snapshots"},
		{dir: "/tmp/etcd", allowTmpfs: true, warns: true},
		{dir: "/tmp/etcd", wantErr: "--allow-tmpfs"},
		{dir: "/tmp", allowTmpfs: true, wantErr: "outside the allowed places"},
		{dir: "", wantErr: "is empty"},
		{dir: "home/core/x", wantErr: "not an absolute path"},
		{dir: "/home/core/../../etc", wantErr: "not a clean path"},
		{dir: "/home/core/x/", wantErr: "not a clean path"},
		{dir: "/home/core", wantErr: "outside the allowed places"},
		{dir: "/var", wantErr: "holds /var/lib/etcd"},
		{dir: "/var/lib", wantErr: "holds /var/lib/etcd"},
		{dir: "/var/lib/etcd", wantErr: "is or holds /var/lib/etcd"},
		{dir: "/var/lib/etcd/backup", wantErr: "is or holds /var/lib/etcd"},
		{dir: "/var/lib/etcd-backup"},
		{dir: "/var/run/etcd", wantErr: "/var/run"},
		{dir: "/var/usrlocal/bin", wantErr: "/var/usrlocal"},
		{dir: "/etc/etcd", wantErr: "outside the allowed places"},
		{dir: "/mnt", wantErr: "outside the allowed places"},
		{dir: "/mnt/a b", wantErr: "letters, digits"},
		{dir: "/mnt/a\"b", wantErr: "letters, digits"},
		{dir: "/mnt/$(reboot)", wantErr: "letters, digits"},
		{dir: "/mnt/a\nb", wantErr: "letters, digits"},
	} {
		warning, err := CheckTargetDir(tc.dir, tc.allowTmpfs)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("CheckTargetDir(%q, %v): %v, want accepted", tc.dir, tc.allowTmpfs, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("CheckTargetDir(%q, %v) = %v, want an error with %q", tc.dir, tc.allowTmpfs, err, tc.wantErr)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("CheckTargetDir(%q): error spans lines: %q", tc.dir, err)
		case (warning != "") != tc.warns:
			t.Errorf("CheckTargetDir(%q, %v): warning %q, want one: %v", tc.dir, tc.allowTmpfs, warning, tc.warns)
		}
	}
}
