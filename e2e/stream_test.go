//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/e2e/nodeagent"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// vias are the ways hcpsnap takes a snapshot; the fault suite runs each.
var vias = []string{"stream", "exec"}

// TestStreamWithoutRoomForACopy: with less free space on the member's
// volume than its database, --via exec refuses before any change and names
// --via stream, which backs the database up.
func TestStreamWithoutRoomForACopy(t *testing.T) {
	env := loadEnv(t)
	// The database must be large enough that less room than a copy needs
	// still leaves etcd room for a new WAL segment (64 MiB): grow it.
	env.growDatabase(t, 96<<20)
	dbSize := env.memberDBSize(t)
	dir := env.memberVolumeDir(t, "etcd-0")
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	// Leave the member less room than its database, but room for a new WAL
	// segment (64 MiB) so that etcd itself keeps writing.
	leave := max(dbSize*9/10, 72<<20)
	if leave >= dbSize+dbSize/10 {
		t.Fatalf("the database (%d MiB) is too small to leave less room than a copy needs and room for etcd's WAL", dbSize>>20)
	}
	filler := filepath.Join(dir, "hcpsnap-e2e-filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(filler) })
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, free-leave); err != nil {
		t.Fatal(err)
	}
	f.Close()

	before := env.state(t)
	res := env.hcpsnap(t, t.TempDir(), "backup", "--via", "exec", "--prefix", "noroom-exec")
	if exitcode.Code(res.code) != exitcode.Precondition || !strings.Contains(res.stderr, "--via stream") {
		t.Fatalf("--via exec without room: exit %d, want %d naming --via stream\nstderr:\n%s", res.code, exitcode.Precondition, res.stderr)
	}
	env.invariants(t, before, "noroom-exec")
	if got := env.listObjects(t, "noroom-exec/"); len(got) != 0 {
		t.Fatalf("a refused run left objects: %v", got)
	}

	res = env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--via", "stream", "--prefix", "noroom-stream")
	if res.code != 0 {
		t.Fatalf("--via stream without room for a copy: exit %d\nstderr:\n%s", res.code, res.stderr)
	}
	env.invariants(t, before, "noroom-stream")
	m := env.readManifest(t, lastSummary(t, res.stdout).Manifest)
	if m.Via != "stream" || m.Etcd.TotalSize < dbSize*9/10 {
		t.Errorf("manifest via %q of a %d-byte database; the member's is %d bytes", m.Via, m.Etcd.TotalSize, dbSize)
	}
}

// TestStreamMemberKilledMidStream: the member dies while its snapshot
// streams; the run takes a new one once the member is back (the API goes
// down again) and ends with one whole backup, both windows reported.
func TestStreamMemberKilledMidStream(t *testing.T) {
	env := loadEnv(t)
	var r *running
	env.backupWithFault(t, faultRun{
		prefix: "stream-memberkill", args: []string{"--via", "stream"},
		at: "snapshot-save done", match: stepDone("snapshot-save"),
		fault:  func(t *testing.T) { killEtcdMember(t, "etcd-0") },
		repair: func(t *testing.T) { env.waitPodReady(t, "etcd-0") },
		want:   []exitcode.Code{exitcode.OK},
		check:  func(t *testing.T, run *running) { r = run },
	})
	m := env.readManifest(t, lastSummary(t, r.stdout.String()).Manifest)
	if len(m.Downtimes) != 2 {
		t.Errorf("manifest reports %d downtime windows, want 2 (the first snapshot and the one taken again): %+v", len(m.Downtimes), m.Downtimes)
	}
}

// growDatabase writes 1 MiB values under /hcpsnap-e2e/grow/ until the hosted
// etcd's database holds at least size bytes; they are deleted when the test
// ends (the database keeps its size).
func (e *testEnv) growDatabase(t *testing.T, size int64) {
	t.Helper()
	cli, err := fixture.EtcdClient(e.FixtureConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cli.Delete(context.Background(), "/hcpsnap-e2e/grow/", clientv3.WithPrefix())
		cli.Close()
	})
	value := strings.Repeat("x", 1<<20)
	for i := 0; e.memberDBSize(t) < size; i++ {
		if i > 256 {
			t.Fatalf("the database does not grow to %d MiB", size>>20)
		}
		for j := 0; j < 8; j++ {
			if _, err := cli.Put(context.Background(), fmt.Sprintf("/hcpsnap-e2e/grow/%03d-%d", i, j), value); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// memberDBSize is the hosted etcd's database size, as etcd reports it.
func (e *testEnv) memberDBSize(t *testing.T) int64 {
	t.Helper()
	cli, err := fixture.EtcdClient(e.FixtureConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := cli.Status(context.Background(), cli.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	return st.DbSize
}

// memberVolumeDir is where the member's data volume is mounted on this
// machine (its local PersistentVolume's path).
func (e *testEnv) memberVolumeDir(t *testing.T, member string) string {
	t.Helper()
	ctx := context.Background()
	pod, err := e.kube.CoreV1().Pods(e.hcpNamespace).Get(ctx, member, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		pvc, err := e.kube.CoreV1().PersistentVolumeClaims(e.hcpNamespace).Get(ctx, v.PersistentVolumeClaim.ClaimName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pv.Spec.Local != nil {
			return pv.Spec.Local.Path
		}
	}
	t.Fatalf("pod %s has no local PersistentVolume", member)
	return ""
}

// TestStreamCutIsTakenAgain: the forwarded stream is cut mid-way (the node
// agent resets it after 8 MiB); the run takes a new snapshot, with the API
// down again, and ends with one whole backup that reports both windows.
func TestStreamCutIsTakenAgain(t *testing.T) {
	env := loadEnv(t)
	before := env.state(t)
	cut := nodeagent.Faults{CutPortForward: []nodeagent.CutPortForward{{Pod: env.hcpNamespace + "/etcd-0", Port: 2379, AfterBytes: 8 << 20}}}
	env.setFaults(t, cut)
	t.Cleanup(func() { env.setFaults(t, nodeagent.Faults{}) })
	r := env.startHcpsnap(t, t.TempDir(), nil, "-o", "json", "backup", "--via", "stream", "--prefix", "stream-cut")
	r.waitEvent(t, "upload-snapshot failed", func(e event) bool { return e.MessageType == "step_failed" && e.Step == "upload-snapshot" })
	env.setFaults(t, nodeagent.Faults{})
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit %d after a cut stream, want 0 (a new snapshot)\nstderr:\n%s", code, r.stderr.String())
	}
	env.invariants(t, before, "stream-cut")
	m := env.readManifest(t, lastSummary(t, r.stdout.String()).Manifest)
	if len(m.Downtimes) != 2 {
		t.Errorf("manifest reports %d downtime windows, want 2: %+v", len(m.Downtimes), m.Downtimes)
	}
	if !strings.Contains(r.stderr.String(), "broke after") {
		t.Errorf("the log does not say the stream broke:\n%s", r.stderr.String())
	}
}
