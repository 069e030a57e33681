package drill

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
	"github.com/hcpsnap/hcpsnap/s3"
)

// memStore is a bucket in memory. onRead, when set, is called as the
// snapshot is read (to cancel a drill mid-stream).
type memStore struct {
	objects map[string][]byte
	meta    map[string]map[string]string
	onRead  func()
}

var _ restore.Store = (*memStore)(nil)

func (m *memStore) Head(_ context.Context, key string) (s3.ObjectInfo, bool, error) {
	v, ok := m.objects[key]
	if !ok {
		return s3.ObjectInfo{}, false, nil
	}
	return s3.ObjectInfo{Key: key, Size: int64(len(v)), Metadata: m.meta[key]}, true, nil
}

func (m *memStore) Get(_ context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error) {
	v, ok := m.objects[key]
	if !ok {
		return nil, s3.ObjectInfo{}, errors.New("NoSuchKey")
	}
	var r io.Reader = bytes.NewReader(v)
	if m.onRead != nil {
		r = &hookReader{r: r, hook: m.onRead}
	}
	return io.NopCloser(r), s3.ObjectInfo{Key: key, Size: int64(len(v))}, nil
}

func (m *memStore) List(_ context.Context, prefix string) ([]s3.ObjectInfo, error) {
	var out []s3.ObjectInfo
	for k, v := range m.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s3.ObjectInfo{Key: k, Size: int64(len(v))})
		}
	}
	return out, nil
}

func (m *memStore) Presign(context.Context, string, time.Duration) (string, time.Time, error) {
	return "", time.Time{}, errors.New("not supported")
}

type hookReader struct {
	r    io.Reader
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	h.hook()
	return h.r.Read(p)
}

// putBackup stores snapshot and its manifest; it returns the backup.
func putBackup(st *memStore, snap []byte, etcd manifest.Etcd, fileSHA string) *restore.Backup {
	if st.objects == nil {
		st.objects, st.meta = map[string][]byte{}, map[string]map[string]string{}
	}
	m := &manifest.Manifest{SchemaVersion: 1, RunID: "run-1", Cluster: "demo", Namespace: "clusters",
		Etcd: etcd, Snapshot: manifest.Object{Key: "backups/demo/t/snapshot.db", Size: int64(len(snap)), SHA256: fileSHA}}
	st.objects[m.Snapshot.Key] = snap
	st.meta[m.Snapshot.Key] = map[string]string{manifest.MetaRunID: "run-1"}
	return &restore.Backup{ManifestKey: "backups/demo/t/manifest.json", Manifest: m}
}
