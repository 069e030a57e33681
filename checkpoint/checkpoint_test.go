package checkpoint

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var cluster = Cluster{Namespace: "clusters", Name: "example", UID: "uid-1"}

func TestWriteReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	r := New("backup", cluster, "host", []string{"preflight", "snapshot-save"}, time.Now())
	r.Step("preflight").Status = Done
	r.Outputs = []byte(`{"snapshotPath":"/var/lib/data/x.db"}`)
	if err := WriteFile(dir, r); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName(r))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.RunID != r.RunID || got.StatusOf("preflight") != Done || got.StatusOf("snapshot-save") != Pending {
		t.Fatalf("round trip lost data: %+v", got)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, got.Outputs); err != nil || compact.String() != string(r.Outputs) {
		t.Fatalf("outputs %s, want %s", got.Outputs, r.Outputs)
	}
	// No temp file is left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("folder holds %d entries, want 1", len(entries))
	}
}

func TestDecodeRefuses(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"not JSON", "{", "not a valid run file"},
		{"empty object", "{}", "not an hcpsnap run file"},
		{"newer schema", `{"schemaVersion":99,"runID":"r"}`, "newer than this hcpsnap reads"},
		{"no run ID", `{"schemaVersion":1}`, "not an hcpsnap run file"},
		{"run ID of another shape", `{"schemaVersion":1,"runID":"r"}`, "is not of the form"},
		{"run ID that climbs out of a folder", `{"schemaVersion":1,"runID":"../../etc/x"}`, "is not of the form"},
		{"run ID with a line break", `{"schemaVersion":1,"runID":"20250101T000000Z-0a1b2c3d\nx"}`, `"20250101T000000Z-0a1b2c3d\nx"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode(%q) = %v, want error containing %q", tt.data, err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	r := New("backup", cluster, "host", nil, time.Now())
	tests := []struct {
		name    string
		command string
		cluster Cluster
		want    string
	}{
		{"same cluster", "backup", cluster, ""},
		{"same cluster, UID unknown", "backup", Cluster{Namespace: "clusters", Name: "example"}, ""},
		{"other cluster", "backup", Cluster{Namespace: "clusters", Name: "other"}, "belongs to cluster clusters/example"},
		{"other namespace", "backup", Cluster{Namespace: "prod", Name: "example"}, "belongs to cluster"},
		{"re-created cluster", "backup", Cluster{Namespace: "clusters", Name: "example", UID: "uid-2"}, "re-created"},
		{"other command", "restore", cluster, `is a "backup" run`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Validate(tt.command, tt.cluster)
			if tt.want == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLatestSkipsFinishedAndOtherClusters(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	older := New("backup", cluster, "h", nil, t0)
	newerFinished := New("backup", cluster, "h", nil, t0.Add(time.Hour))
	newerFinished.Finished = true
	other := New("backup", Cluster{Namespace: "clusters", Name: "example2"}, "h", nil, t0.Add(2*time.Hour))
	for _, r := range []*Run{older, newerFinished, other} {
		if err := WriteFile(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Latest(dir, cluster)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.RunID != older.RunID {
		t.Fatalf("Latest = %v, want run %s", got, older.RunID)
	}
	none, err := Latest(filepath.Join(dir, "missing"), cluster)
	if err != nil || none != nil {
		t.Fatalf("Latest of a missing folder = %v, %v; want nil, nil", none, err)
	}
}

func TestCheckSteps(t *testing.T) {
	names := []string{"preflight", "snapshot-save"}
	tests := []struct {
		name   string
		mutate func(r *Run)
		want   string
	}{
		{"as written", func(*Run) {}, ""},
		{"a step missing", func(r *Run) { r.Steps = r.Steps[:1] }, "records 1 steps, this hcpsnap has 2"},
		{"steps swapped", func(r *Run) { r.Steps[0], r.Steps[1] = r.Steps[1], r.Steps[0] }, `records step "snapshot-save" where this hcpsnap has preflight`},
		{"unknown status", func(r *Run) { r.Steps[1].Status = "done\nforged" }, `unknown status "done\nforged"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New("backup", cluster, "h", names, time.Now())
			tt.mutate(r)
			err := r.CheckSteps(names)
			if tt.want == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n")) {
				t.Fatalf("error %v, want one line containing %q", err, tt.want)
			}
		})
	}
}

func TestLatestSkipsAbandoned(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	older := New("backup", cluster, "h", nil, t0)
	abandoned := New("backup", cluster, "h", nil, t0.Add(time.Hour))
	abandoned.Abandoned = true
	for _, r := range []*Run{older, abandoned} {
		if err := WriteFile(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Latest(dir, cluster)
	if err != nil || got == nil || got.RunID != older.RunID {
		t.Fatalf("Latest = %v, %v; want run %s", got, err, older.RunID)
	}
}

// TestDirFallsBackToTemp: the state folder is the first of HCPSNAP_STATE_DIR, XDG_STATE_HOME, a writable home and
// the temp folder; a home of "/" (OpenShift's arbitrary UID) or one that cannot be written is skipped.
func TestDirFallsBackToTemp(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		writable bool
		temp     string
		want     string
		wantErr  bool
	}{
		{name: "explicit", env: map[string]string{"HCPSNAP_STATE_DIR": "/s", "XDG_STATE_HOME": "/x", "HOME": "/h"}, writable: true, temp: "/tmp", want: "/s"},
		{name: "xdg", env: map[string]string{"XDG_STATE_HOME": "/x", "HOME": "/h"}, writable: true, temp: "/tmp", want: "/x/hcpsnap/runs"},
		{name: "home", env: map[string]string{"HOME": "/h"}, writable: true, temp: "/tmp", want: "/h/.local/state/hcpsnap/runs"},
		{name: "home not writable", env: map[string]string{"HOME": "/h"}, writable: false, temp: "/tmp", want: "/tmp/hcpsnap/runs"},
		{name: "home is root", env: map[string]string{"HOME": "/"}, writable: true, temp: "/var/tmp", want: "/var/tmp/hcpsnap/runs"},
		{name: "no home", env: map[string]string{}, writable: true, temp: "/tmp", want: "/tmp/hcpsnap/runs"},
		{name: "nothing", env: map[string]string{}, writable: true, temp: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dirFrom(func(k string) string { return tt.env[k] }, func(string) bool { return tt.writable }, tt.temp)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("dirFrom = %q, %v; want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestWritable checks the probe on real folders: a temp folder is writable, a missing one and (for a non-root
// user) a read-only one are not.
func TestWritable(t *testing.T) {
	dir := t.TempDir()
	if !writable(dir) {
		t.Errorf("%s is not writable", dir)
	}
	if writable(filepath.Join(dir, "missing")) {
		t.Error("a missing folder is writable")
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		if writable(ro) {
			t.Error("a folder of mode 0500 is writable")
		}
	}
}
