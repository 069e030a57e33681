package steps

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/s3"
)

const fixedTimestamp = "20250314T092653Z"

func TestBackupUpload(t *testing.T) {
	snapKey := "backups/example/" + fixedTimestamp + "/snapshot.db"
	flipByte := func(b []byte) []byte {
		b = slices.Clone(b)
		b[len(b)/3] ^= 0x40
		return b
	}
	tests := []struct {
		name string
		// setup prepares the fixture; stored is put in the bucket once the
		// snapshot is saved, as a crashed earlier attempt would have left it.
		setup      func(fx *fixture)
		stored     func(fx *fixture, s *State) *storedObject
		wantCode   exitcode.Code
		wantErr    string
		wantUpload bool // Upload was called
		wantReused bool
	}{
		{
			name:       "fresh upload",
			wantUpload: true,
		},
		{
			name: "this snapshot already stored (a crash after the upload): reused, not uploaded again",
			stored: func(fx *fixture, s *State) *storedObject {
				return &storedObject{Data: fx.snapshot, Put: s3.PutOptions{Metadata: map[string]string{
					manifest.MetaSnapshotID: s.Out.Attempt.ID, manifest.MetaRunID: s.Run.RunID}}}
			},
			wantReused: true,
		},
		{
			name: "an earlier attempt's snapshot of the same size: uploaded again",
			stored: func(fx *fixture, s *State) *storedObject {
				other := makeSnapshot(99, len(fx.snapshot)-32)
				return &storedObject{Data: other, Put: s3.PutOptions{Metadata: map[string]string{
					manifest.MetaSnapshotID: s.Run.RunID + "-1", manifest.MetaRunID: s.Run.RunID}}}
			},
			wantUpload: true,
		},
		{
			name: "this snapshot's ID, other size: uploaded again",
			stored: func(fx *fixture, s *State) *storedObject {
				return &storedObject{Data: fx.snapshot[:1000], Put: s3.PutOptions{Metadata: map[string]string{
					manifest.MetaSnapshotID: s.Out.Attempt.ID}}}
			},
			wantUpload: true,
		},
		{
			name:       "corrupt stream: trailing hash mismatch aborts",
			setup:      func(fx *fixture) { fx.exec.stream = flipByte },
			wantCode:   exitcode.Restored,
			wantErr:    "snapshot stream is corrupt",
			wantUpload: true,
		},
		{
			name:       "truncated stream aborts",
			setup:      func(fx *fixture) { fx.exec.stream = func(b []byte) []byte { return b[:len(b)-1000] } },
			wantCode:   exitcode.Restored,
			wantErr:    "the stream ended at byte",
			wantUpload: true,
		},
		{
			name: "another valid snapshot of the same size aborts",
			setup: func(fx *fixture) {
				fx.exec.stream = func(b []byte) []byte { return makeSnapshot(7, len(b)-32) }
			},
			wantCode:   exitcode.Restored,
			wantErr:    "differs from the saved snapshot",
			wantUpload: true,
		},
		{
			name:       "pod dies mid-stream: the exec error aborts",
			setup:      func(fx *fixture) { fx.exec.fail["cat"] = errors.New("command terminated with exit code 137") },
			wantCode:   exitcode.Restored,
			wantErr:    "exit code 137",
			wantUpload: true,
		},
		{
			name: "the store refuses the upload",
			setup: func(fx *fixture) {
				fx.store = newFailingStore(fx.j, "Upload", errors.New("SlowDown: reduce your request rate"))
			},
			wantCode:   exitcode.Restored,
			wantErr:    "SlowDown",
			wantUpload: true,
		},
		{
			name:     "Head fails",
			setup:    func(fx *fixture) { fx.store = newFailingStore(fx.j, "Head", errors.New("InternalError")) },
			wantCode: exitcode.Restored,
			wantErr:  "InternalError",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			if tt.setup != nil {
				tt.setup(fx)
			}
			s := fx.state(defaultOptions())
			var before storedObject
			if tt.stored != nil {
				fx.exec.onSave = func() {
					fx.store.mu.Lock()
					defer fx.store.mu.Unlock()
					before = *tt.stored(fx, s)
					fx.store.objects[snapKey] = before
				}
			}
			s.Out.Timestamp = fixedTimestamp
			var progress []int64
			s.Events = func(e Event) {
				if e.MessageType == "upload_progress" {
					progress = append(progress, e.BytesDone)
					if e.BytesTotal != int64(len(fx.snapshot)) {
						t.Errorf("progress total %d, want %d", e.BytesTotal, len(fx.snapshot))
					}
				}
			}

			err := fx.execute(s)

			if got := exitcode.Of(err); got != tt.wantCode {
				t.Fatalf("exit code %d, want %d: %v", got, tt.wantCode, err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) ||
				!strings.HasPrefix(err.Error(), "step "+StepUpload+": ")) {
				t.Errorf("error %v, want it to start with the upload step and contain %q", err, tt.wantErr)
			}
			if got := len(fx.store.methodCalls("Upload")) > 0; got != tt.wantUpload {
				t.Errorf("Upload called = %v, want %v", got, tt.wantUpload)
			}
			if s.Out.Attempt.UploadReused != tt.wantReused {
				t.Errorf("UploadReused = %v, want %v", s.Out.Attempt.UploadReused, tt.wantReused)
			}
			checkRestored(t, fx, nil)
			obj, stored := fx.store.object(snapKey)
			if tt.wantCode != exitcode.OK {
				// No completed object, or the one that was there before.
				if stored && (tt.stored == nil || !bytes.Equal(obj.Data, before.Data)) {
					t.Errorf("a failed upload completed an object of %d bytes", len(obj.Data))
				}
				if tt.wantUpload && !slices.Contains(fx.store.abortedKeys(), snapKey) && fx.store.failOn["Upload"] == nil {
					t.Error("the multipart upload was not aborted")
				}
				for _, k := range fx.store.keys() {
					if k != snapKey {
						t.Errorf("a failed run stored %s", k)
					}
				}
				if st := s.Run.StatusOf(StepUpload); st != checkpoint.Failed {
					t.Errorf("upload is %s, want failed", st)
				}
				if st := s.Run.StatusOf(StepCleanupPodFile); st != checkpoint.Undone {
					t.Errorf("cleanup-pod-file is %s, want undone", st)
				}
				return
			}
			if !stored || !bytes.Equal(obj.Data, fx.snapshot) {
				t.Fatalf("snapshot object holds %d bytes, want the %d streamed", len(obj.Data), len(fx.snapshot))
			}
			if s.Out.Attempt.SHA256 != sha256Hex(fx.snapshot) || s.Out.Attempt.UploadID != "" || s.Out.Attempt.ObjectKey != snapKey {
				t.Errorf("outputs sha256=%s uploadID=%q key=%s", s.Out.Attempt.SHA256, s.Out.Attempt.UploadID, s.Out.Attempt.ObjectKey)
			}
			if tt.wantReused {
				if calls := fx.store.methodCalls("Get"); !slices.Equal(calls, []string{snapKey}) {
					t.Errorf("Get calls %v, want the object hashed once", calls)
				}
				if _, ok := fx.exec.call("cat"); ok {
					t.Error("the snapshot was streamed out of the pod although the bucket held it")
				}
				return
			}
			// A crashed attempt's multipart uploads are aborted before a new one.
			calls := fx.store.allCalls()
			ia, iu := slices.Index(calls, "AbortUploads "+snapKey), slices.Index(calls, "Upload "+snapKey)
			if ia < 0 || ia > iu {
				t.Errorf("store calls %v: AbortUploads must come before Upload", calls)
			}
			if obj.Put.Metadata[manifest.MetaRunID] != s.Run.RunID {
				t.Errorf("metadata %v", obj.Put.Metadata)
			}
			if len(progress) == 0 || progress[len(progress)-1] != int64(len(fx.snapshot)) || !slices.IsSorted(progress) {
				t.Errorf("progress %v", progress)
			}
			// The upload ID was saved while the upload ran, so that a
			// crash leaves a record to abort.
			if !fx.saver.sawUploadID("upload-1") {
				t.Error("no checkpoint recorded the upload ID")
			}
		})
	}
}

// sawUploadID reports whether any saved checkpoint recorded id.
func (m *memSaver) sawUploadID(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, data := range m.saves {
		run, err := checkpoint.Decode(data)
		if err != nil {
			continue
		}
		if out, err := LoadOutputs(run); err == nil && out.Attempt != nil && out.Attempt.UploadID == id {
			return true
		}
	}
	return false
}

// TestEtcdVerifier feeds the verifier every way a reader may split a stream.
