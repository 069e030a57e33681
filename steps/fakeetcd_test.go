package steps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
)

// snapshotTestdata is a real snapshot: `etcdctl snapshot save` of etcd
// 3.6.5 holding 49 keys at revision 52 (etcdutl snapshot status: totalSize
// 24576, version 3.6.0).
const (
	snapshotTestdata     = "testdata/snapshot-v3.6.5-rev52.db"
	snapshotTestdataRev  = 52
	snapshotTestdataSize = 24576
)

// boltSnapshot returns the real snapshot with its newest revision, 52,
// raised to rev (>= 52), and etcd's trailing SHA-256 made right again: a
// distinct, valid snapshot per revision, as a member gives over time.
func boltSnapshot(t testing.TB, rev int64) []byte {
	t.Helper()
	data, err := os.ReadFile(snapshotTestdata)
	if err != nil {
		t.Fatal(err)
	}
	if rev < snapshotTestdataRev {
		t.Fatalf("revision %d is older than the test snapshot's %d", rev, snapshotTestdataRev)
	}
	db := data[:len(data)-sha256.Size]
	var old, repl [9]byte
	binary.BigEndian.PutUint64(old[:8], snapshotTestdataRev)
	binary.BigEndian.PutUint64(repl[:8], uint64(rev))
	old[8], repl[8] = '_', '_'
	if bytes.Count(db, old[:]) != 1 {
		t.Fatalf("the test snapshot holds revision %d's key %d times, want once", snapshotTestdataRev, bytes.Count(db, old[:]))
	}
	db = bytes.Replace(slices.Clone(db), old[:], repl[:], 1)
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// fakeEtcd is the member reached through port-forward (--via stream). Its
// snapshot streams go through the fault plan: opening one, and its end.
type fakeEtcd struct {
	mu    sync.Mutex
	j     *journal
	fault *faultPlan
	// dbSize is what Status reports; statusErr fails it.
	dbSize    int64
	statusErr error
	// snapshot is what a stream carries, unless nextSnapshot gives each
	// stream its own; onSnapshot runs as a stream opens.
	snapshot     []byte
	nextSnapshot func() []byte
	onSnapshot   func()
	// cutAfter > 0 breaks the next cuts streams after that many bytes.
	cutAfter int
	cuts     int
	// gate, when set, holds every stream after its first chunk until it is
	// closed: the model opens it when the run waits for the stream, so
	// that the stream's operations keep one order.
	gate chan struct{}
	// opened counts the streams opened; open those still running.
	opened int
	open   int
}

var _ EtcdStream = (*fakeEtcd)(nil)

func (f *fakeEtcd) Status(_ context.Context, namespace, pod string) (int64, string, error) {
	idx, err := f.fault.before("etcd status " + pod)
	if err != nil {
		return 0, "", err
	}
	if f.statusErr != nil {
		return 0, "", f.statusErr
	}
	return f.dbSize, "3.6.5", f.fault.after(idx)
}

func (f *fakeEtcd) Snapshot(ctx context.Context, namespace, pod string) (io.ReadCloser, error) {
	idx, err := f.fault.before("etcd snapshot " + pod)
	if err != nil {
		return nil, err
	}
	data := f.snapshot
	if f.nextSnapshot != nil {
		data = f.nextSnapshot()
	}
	f.j.add("etcd snapshot %s/%s", namespace, pod)
	if f.onSnapshot != nil {
		f.onSnapshot()
	}
	f.mu.Lock()
	f.opened++
	f.open++
	cut := 0
	if f.cuts > 0 {
		f.cuts--
		cut = f.cutAfter
	}
	f.mu.Unlock()
	st := &fakeStream{f: f, ctx: ctx, data: data, cut: cut, what: "etcd stream end " + pod}
	if err := f.fault.after(idx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

func (f *fakeEtcd) streams() (opened, open int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opened, f.open
}

// fakeStream serves a snapshot in 64 KiB chunks.
type fakeStream struct {
	f      *fakeEtcd
	ctx    context.Context
	data   []byte
	off    int
	cut    int
	what   string
	closed bool
	once   sync.Once
}

var errStreamCut = errors.New("rpc error: code = Unavailable desc = error reading from server: EOF (stream cut)")

func (s *fakeStream) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.off > 0 && s.f.gate != nil {
		select {
		case <-s.f.gate:
		case <-s.ctx.Done():
			return 0, s.ctx.Err()
		}
	}
	if s.cut > 0 && s.off >= s.cut {
		return 0, errStreamCut
	}
	if s.off == len(s.data) {
		idx, err := s.f.fault.before(s.what)
		if err != nil {
			return 0, fmt.Errorf("snapshot stream: %w", err)
		}
		if err := s.f.fault.after(idx); err != nil {
			return 0, fmt.Errorf("snapshot stream: %w", err)
		}
		return 0, io.EOF
	}
	end := min(len(s.data), s.off+len(p), s.off+64<<10)
	if s.cut > 0 {
		end = min(end, s.cut)
	}
	n := copy(p, s.data[s.off:end])
	s.off += n
	return n, nil
}

func (s *fakeStream) Close() error {
	s.once.Do(func() {
		s.f.mu.Lock()
		s.f.open--
		s.f.mu.Unlock()
	})
	return nil
}

func TestBoltSnapshotKeepsTheFormat(t *testing.T) {
	a, b := boltSnapshot(t, 60), boltSnapshot(t, 61)
	if bytes.Equal(a, b) || len(a) != len(b) {
		t.Fatal("two revisions gave the same snapshot")
	}
	for _, d := range [][]byte{a, b} {
		sum := sha256.Sum256(d[:len(d)-sha256.Size])
		if !bytes.Equal(sum[:], d[len(d)-sha256.Size:]) {
			t.Error("the trailing SHA-256 does not match")
		}
	}
}
