package prune

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hcpsnap/hcpsnap/s3"
)

// memStore is an in-memory bucket. It can crash (fail every write from the
// n-th on, as a killed process stops writing), refuse deletes of chosen
// keys, lock objects and fail reads of chosen keys.
type memStore struct {
	mu      sync.Mutex
	objects map[string]memObject
	writes  int
	// crashAt, when > 0, fails the crashAt-th write and every later one.
	crashAt int
	refuse  map[string]bool
	// lockedDelete refuses deletes of keys as MinIO does for a lock.
	lockedDelete map[string]bool
	failGet      map[string]bool
	log          []string
}

type memObject struct {
	data []byte
	info s3.ObjectInfo
}

var errCrash = errors.New("crashed")

func newMemStore() *memStore {
	return &memStore{objects: map[string]memObject{}, refuse: map[string]bool{}, lockedDelete: map[string]bool{}, failGet: map[string]bool{}}
}

func (m *memStore) put(key string, data []byte, meta map[string]string) {
	m.objects[key] = memObject{data: data, info: s3.ObjectInfo{Key: key, Size: int64(len(data)), Metadata: meta}}
}

func (m *memStore) keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ks []string
	for k := range m.objects {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (m *memStore) write(what string) error {
	m.writes++
	if m.crashAt > 0 && m.writes >= m.crashAt {
		return errCrash
	}
	m.log = append(m.log, what)
	return nil
}

func (m *memStore) Head(_ context.Context, key string) (s3.ObjectInfo, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[key]
	return o.info, ok, nil
}

func (m *memStore) Get(_ context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failGet[key] {
		return nil, s3.ObjectInfo{}, fmt.Errorf("get %s: connection reset", key)
	}
	o, ok := m.objects[key]
	if !ok {
		return nil, s3.ObjectInfo{}, fmt.Errorf("get %s: NoSuchKey", key)
	}
	return io.NopCloser(bytes.NewReader(o.data)), o.info, nil
}

func (m *memStore) List(_ context.Context, prefix string) ([]s3.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []s3.ObjectInfo
	for k, o := range m.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s3.ObjectInfo{Key: k, Size: o.info.Size})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *memStore) Presign(context.Context, string, time.Duration) (string, time.Time, error) {
	return "", time.Time{}, errors.New("not in this fake")
}

func (m *memStore) Put(_ context.Context, key string, data []byte, opts s3.PutOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.write("put " + key); err != nil {
		return err
	}
	m.put(key, data, opts.Metadata)
	return nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lockedDelete[key] {
		return fmt.Errorf("delete %s: %w: %w (ObjectLocked)", key, s3.ErrDeleteRefused, s3.ErrObjectLocked)
	}
	if m.refuse[key] {
		return fmt.Errorf("delete %s: %w (AccessDenied)", key, s3.ErrDeleteRefused)
	}
	if err := m.write("delete " + key); err != nil {
		return err
	}
	delete(m.objects, key)
	return nil
}

var _ Store = (*memStore)(nil)
