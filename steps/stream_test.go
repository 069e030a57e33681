package steps

import (
	"errors"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

func streamOptions() Options {
	o := defaultOptions()
	o.Via, o.SnapshotRetries = ViaStream, 2
	return o
}

// TestStreamRunsNothingInThePod: a streamed backup execs nothing, and its
// manifest describes the object as etcdutl would.
func TestStreamRunsNothingInThePod(t *testing.T) {
	fx := newFixture(t, nil)
	s := fx.state(streamOptions())
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	if ops := fx.exec.ops(); len(ops) != 0 {
		t.Errorf("ran %v in the pod", ops)
	}
	checkRestored(t, fx, nil)
	m := readManifest(t, fx, s.Out.ManifestKey)
	obj, _ := fx.store.object(m.Snapshot.Key)
	if m.Via != ViaStream || m.Etcd.Revision != snapshotTestdataRev || m.Etcd.TotalSize != snapshotTestdataSize ||
		m.Snapshot.Size != int64(len(obj.Data)) || m.Snapshot.SHA256 != sha256Hex(obj.Data) || len(m.Downtimes) != 1 {
		t.Errorf("manifest %+v, object of %d bytes", m, len(obj.Data))
	}
	if opened, open := fx.etcd.streams(); opened != 1 || open != 0 {
		t.Errorf("%d streams opened, %d left open; want 1, 0", opened, open)
	}
}

// TestStreamRetakesABrokenStream: a stream cut mid-way is taken again from
// the start, with the API down again, and the manifest reports both windows.
func TestStreamRetakesABrokenStream(t *testing.T) {
	fx := newFixture(t, nil)
	fx.etcd.cuts, fx.etcd.cutAfter = 1, 8<<10
	s := fx.state(streamOptions())
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, fx, nil)
	m := readManifest(t, fx, s.Out.ManifestKey)
	if len(m.Downtimes) != 2 || !m.Downtimes[0].End.Before(m.Downtimes[1].Start) {
		t.Fatalf("downtimes %+v, want two windows one after the other", m.Downtimes)
	}
	if sum := m.Downtimes[0].Seconds + m.Downtimes[1].Seconds; sum != m.DowntimeSeconds {
		t.Errorf("downtimeSeconds %v, the windows add up to %v", m.DowntimeSeconds, sum)
	}
	if opened, open := fx.etcd.streams(); opened != 2 || open != 0 || s.Out.Retakes != 1 {
		t.Errorf("%d streams opened, %d left open, %d retakes; want 2, 0, 1", opened, open, s.Out.Retakes)
	}
	scaledTo0 := 0
	for _, e := range fx.j.get() {
		if e == "scale kube-apiserver=0" {
			scaledTo0++
		}
	}
	if scaledTo0 != 2 {
		t.Errorf("the API went down %d times, want 2: %v", scaledTo0, fx.j.get())
	}
}

// TestStreamGivesUp: streams that keep breaking end the run after
// --snapshot-retries new snapshots, with the cluster as it was.
func TestStreamGivesUp(t *testing.T) {
	fx := newFixture(t, nil)
	fx.etcd.cuts, fx.etcd.cutAfter = 10, 8<<10
	s := fx.state(streamOptions())
	err := fx.execute(s)
	if err == nil || !strings.Contains(err.Error(), "--snapshot-retries 2") || !errors.Is(err, errStreamCut) {
		t.Fatalf("error %v, want the cut stream and the retry limit named", err)
	}
	if code := exitcode.Of(err); code != exitcode.Restored {
		t.Errorf("exit code %d, want %d", code, exitcode.Restored)
	}
	checkRestored(t, fx, nil)
	if opened, open := fx.etcd.streams(); opened != 3 || open != 0 {
		t.Errorf("%d streams opened, %d left open; want 3, 0", opened, open)
	}
	if keys := fx.store.keys(); len(keys) != 0 {
		t.Errorf("objects left in the bucket: %v", keys)
	}
}

// TestStreamPreflightRefuses: a member that does not answer through
// port-forward is refused before any change, naming what to check.
func TestStreamPreflightRefuses(t *testing.T) {
	fx := newFixture(t, nil)
	fx.etcd.statusErr = errors.New(`pods "etcd-0" is forbidden: cannot create resource "pods/portforward"`)
	s := fx.state(streamOptions())
	err := fx.execute(s)
	if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), "--via exec") || !strings.Contains(err.Error(), "pods/portforward") {
		t.Fatalf("error %v, want a precondition naming pods/portforward and --via exec", err)
	}
	if p, u := fx.hs.writes(); len(p) != 0 || u != 0 {
		t.Errorf("HostedCluster patches %v, annotation patches %d", p, u)
	}
}
