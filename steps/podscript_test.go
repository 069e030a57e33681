package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/internal/etcdsnap"
	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// localExec runs the pod scripts with this machine's sh and coreutils, the
// tools an etcd image has, so that the scripts themselves are under test.
type localExec struct{ env []string }

func (l localExec) Exec(ctx context.Context, _, _, _ string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Stdin, c.Stdout, c.Stderr, c.Env = stdin, stdout, stderr, append(os.Environ(), l.env...)
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return &kube.ExitError{Pod: "local", Command: cmd, Code: ee.ExitCode()}
	}
	return err
}

// fakeEtcdctl writes like `etcdctl snapshot save PATH`: PATH.part first,
// grown chunk by chunk from $SRC, then renamed to PATH. $MODE makes it fail
// before the first byte, fail halfway (removing the part file, as etcdctl's
// deferred cleanup does), or hang halfway. It runs on $HOSTPATH when set: the
// tests that restrict the scripts' PATH to podPrograms do not restrict it.
const fakeEtcdctl = `#!/bin/sh
PATH=${HOSTPATH:-$PATH}
if [ "$1" = version ]; then echo "etcdctl version: 3.6.5"; echo "API version: 3.6"; exit 0; fi
for p; do :; done
echo '{"level":"info","msg":"created temporary db file"}' >&2
if [ "$MODE" = fail-early ]; then echo "Error: context deadline exceeded" >&2; exit 1; fi
: >"$p.part"
sleep 0.2
size=$(stat -c %s "$SRC") chunk=65536 i=0
while [ $((i*chunk)) -lt $size ]; do
  if [ $((i*chunk*2)) -ge $size ]; then
    case "$MODE" in
    fail-midway) rm -f "$p.part"; echo "Error: rpc error: code = Unavailable desc = transport is closing" >&2; exit 1;;
    hang) sleep 60;;
    esac
  fi
  dd if="$SRC" bs=$chunk skip=$i count=1 2>/dev/null >>"$p.part"
  i=$((i+1)); sleep 0.01
done
mv "$p.part" "$p"
echo "Snapshot saved at $p"
`

// localState is a run whose pod is this machine: the snapshot folder is a
// temporary one and etcdctl is fakeEtcdctl in the given mode.
func localState(t *testing.T, mode string, opts func(*Options)) (*State, []byte) {
	t.Helper()
	dir := t.TempDir()
	data := makeSnapshot(7, 3<<20+123)
	src := filepath.Join(dir, "source.db")
	etcdctlPath := filepath.Join(dir, "etcdctl")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(etcdctlPath, []byte(fakeEtcdctl), 0o700); err != nil {
		t.Fatal(err)
	}
	fx := newFixture(t, nil)
	o := defaultOptions()
	o.Etcd.Etcdctl, o.Etcd.SnapshotDir, o.WaitTimeout = etcdctlPath, filepath.Join(dir, "data"), time.Second
	if opts != nil {
		opts(&o)
	}
	if err := os.Mkdir(o.Etcd.SnapshotDir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := fx.state(o)
	s.Out.HCPNamespace = testHCPNS
	s.Clients.Exec = localExec{env: []string{"SRC=" + src, "MODE=" + mode}}
	return s, data
}

// readSnapshot reads the snapshot out of the "pod" as the upload does.
func readSnapshot(ctx context.Context, s *State) ([]byte, *etcdsnap.Verifier, error) {
	r := newPodFileReader(ctx, s, s.Out.Attempt.Path, 0)
	r.rangeSize = 256 << 10 // many ranges, each started ahead, over a file that grows
	defer r.Close()
	v := etcdsnap.NewVerifier(r, 0, "")
	got, err := io.ReadAll(v)
	return got, v, err
}

// podFiles lists what is left in the snapshot folder.
func podFiles(t *testing.T, s *State) []string {
	t.Helper()
	entries, err := os.ReadDir(s.Opts.Etcd.SnapshotDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestSnapshotWrittenWhileRead(t *testing.T) {
	ctx := quietContext()
	s, data := localState(t, "", nil)
	if err := snapshotSave(ctx, s); err != nil {
		t.Fatal(err)
	}
	// snapshot-save returned at the first byte: etcdctl is still writing.
	st, err := probeWriter(ctx, s, s.Out.Attempt.Path)
	if err != nil || !st.Running {
		t.Fatalf("writer state %+v, %v; want running", st, err)
	}
	got, v, err := readSnapshot(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) || v.FileSHA256() != sha256Hex(data) {
		t.Fatalf("read %d bytes, want the %d etcdctl wrote", len(got), len(data))
	}
	st, err = probeWriter(ctx, s, s.Out.Attempt.Path)
	if err != nil || !st.Done || st.Status != 0 || st.Size != int64(len(data)) || st.EtcdSum != v.EtcdSHA256() {
		t.Fatalf("writer state %+v, %v; want done with the file's size and hash", st, err)
	}
	if err := cleanupPodFile(ctx, s); err != nil {
		t.Fatal(err)
	}
	if left := podFiles(t, s); len(left) != 0 {
		t.Errorf("files left in the pod: %v", left)
	}
}

func TestSnapshotHoldUntilSaved(t *testing.T) {
	ctx := quietContext()
	s, data := localState(t, "", func(o *Options) { o.HoldAPIUntilSaved = true })
	if err := snapshotSave(ctx, s); err != nil {
		t.Fatal(err)
	}
	st, err := probeWriter(ctx, s, s.Out.Attempt.Path)
	if err != nil || !st.Done || st.Size != int64(len(data)) {
		t.Fatalf("writer state %+v, %v; want a complete file", st, err)
	}
}

// TestSnapshotSaveIsBounded: a writer that never gets to the point the API
// waits for is stopped in the pod, and snapshot-save fails instead of
// keeping the API down until the pause deadline.
func TestSnapshotSaveIsBounded(t *testing.T) {
	ctx := quietContext()
	s, _ := localState(t, "hang", func(o *Options) {
		o.HoldAPIUntilSaved, o.PauseTimeout = true, time.Second
	})
	start := time.Now()
	err := snapshotSave(ctx, s)
	if err == nil || !strings.Contains(err.Error(), "has not reached done after 1s") {
		t.Fatalf("snapshot-save error %v, want the limit", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("snapshot-save took %s with a 1s limit", d)
	}
	time.Sleep(300 * time.Millisecond)
	st, err := probeWriter(ctx, s, s.Out.Attempt.Path)
	if err != nil || st.Running {
		t.Errorf("writer state %+v, %v: the writer still runs", st, err)
	}
}

func TestSnapshotWriterFailures(t *testing.T) {
	tests := []struct {
		mode, wantSaveErr, wantReadErr string
	}{
		{mode: "fail-early", wantSaveErr: "context deadline exceeded"},
		{mode: "fail-midway", wantReadErr: "transport is closing"},
		{mode: "hang", wantReadErr: "has not grown for 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			ctx := quietContext()
			s, _ := localState(t, tt.mode, nil)
			err := snapshotSave(ctx, s)
			if tt.wantSaveErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantSaveErr) {
					t.Fatalf("snapshot-save error %v, want %q", err, tt.wantSaveErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = readSnapshot(ctx, s)
			if err == nil || !strings.Contains(err.Error(), tt.wantReadErr) || errors.Is(err, io.EOF) {
				t.Fatalf("read error %v, want %q", err, tt.wantReadErr)
			}
			if err := cleanupPodFile(ctx, s); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond) // a writer left running would write its status now
			if left := podFiles(t, s); len(left) != 0 {
				t.Errorf("files left in the pod: %v", left)
			}
		})
	}
}

// TestSnapshotAgain: a second snapshot-save (a resumed run) stops the first
// writer and starts over; nothing of the first attempt leaks into the second.
func TestSnapshotAgain(t *testing.T) {
	ctx := quietContext()
	s, data := localState(t, "", nil)
	if err := snapshotSave(ctx, s); err != nil {
		t.Fatal(err)
	}
	first := s.Out.Attempt.ID
	if err := snapshotSave(ctx, s); err != nil {
		t.Fatal(err)
	}
	if s.Out.Attempt.ID == first {
		t.Error("the second attempt has the first one's snapshot ID")
	}
	got, _, err := readSnapshot(ctx, s)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
}

// TestStaleWriterPIDIsNotKilled: after a container restart the recorded PID
// may be another process's; cleanup must leave it alone.
func TestStaleWriterPIDIsNotKilled(t *testing.T) {
	ctx := quietContext()
	s, _ := localState(t, "", nil)
	p := snapshotPath(s) // derived: a dead writer of this run left its files there
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	for name, data := range map[string]string{"": "part of a dead writer's snapshot", ".part": "x", ".pid": strconv.Itoa(other.Process.Pid)} {
		if err := os.WriteFile(p+name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := cleanupPodFile(ctx, s); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", other.Process.Pid))
	if i := bytes.LastIndexByte(stat, ')'); err != nil || i < 0 || len(stat) < i+3 || stat[i+2] != 'S' {
		t.Fatalf("cleanup killed a process that is not etcdctl: %q, %v", stat, err)
	}
	if left := podFiles(t, s); len(left) != 0 {
		t.Errorf("files left in the pod: %v", left)
	}
}
