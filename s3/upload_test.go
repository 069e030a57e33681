package s3

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

const mib = 1 << 20

// stream returns n pseudo-random bytes that cost no memory, and their hex
// SHA-256.
func stream(seed uint64, n int64) (io.Reader, string) {
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n)); err != nil {
		panic(err)
	}
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n), hex.EncodeToString(h.Sum(nil))
}

func TestUploadRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		size  int64
		parts int
	}{
		{"empty stream stores one empty part", 0, 1},
		{"smaller than a part", 1000, 1},
		{"exactly one part", 5 * mib, 1},
		{"exactly two parts", 10 * mib, 2},
		{"three and a half parts", 17*mib + mib/2, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := newFakeS3(t, "bucket")
			s := openFake(t, srv, "bucket", 5*mib, 3)
			r, want := stream(1, tt.size)

			var mu sync.Mutex
			var created string
			var progress []int64
			res, err := s.Upload(context.Background(), "dir/snapshot.db", r, UploadOptions{
				Metadata: map[string]string{"sha256": "x", "cluster": "c1"},
				OnCreate: func(id string) {
					// The upload must exist, and no part moved yet.
					if acts := fake.Actions(); !slices.Equal(acts, []string{"create"}) {
						t.Errorf("OnCreate saw actions %v, want [create]", acts)
					}
					created = id
				},
				OnPart: func(done int64) {
					mu.Lock()
					defer mu.Unlock()
					progress = append(progress, done)
				},
			})
			if err != nil {
				t.Fatalf("Upload: %v", err)
			}
			if created == "" {
				t.Error("OnCreate was not called")
			}
			if res.Size != tt.size {
				t.Errorf("result = %d bytes, want %d bytes", res.Size, tt.size)
			}
			if res.ETag == "" {
				t.Error("no ETag")
			}
			if len(progress) != tt.parts || progress[len(progress)-1] != tt.size || !slices.IsSorted(progress) {
				t.Errorf("OnPart calls = %v, want %d increasing calls ending at %d", progress, tt.parts, tt.size)
			}
			obj, ok := fake.object("dir/snapshot.db")
			if !ok {
				t.Fatal("object not stored")
			}
			sum := sha256.Sum256(obj.data)
			if got := hex.EncodeToString(sum[:]); got != want {
				t.Errorf("stored SHA-256 = %s, want %s", got, want)
			}
			if obj.metadata["cluster"] != "c1" || obj.metadata["sha256"] != "x" {
				t.Errorf("stored metadata = %v", obj.metadata)
			}
			if p := fake.pending(); len(p) != 0 {
				t.Errorf("unfinished uploads: %v", p)
			}
		})
	}
}

// TestUploadMemoryBound streams 100 MiB through 5 MiB parts with two workers
// and checks that at most two parts were in flight and that far less than
// the stream was allocated: the bound is PartSize × (Concurrency+1) = 15 MiB.
func TestUploadMemoryBound(t *testing.T) {
	fake, srv := newFakeS3(t, "bucket")
	s := openFake(t, srv, "bucket", 5*mib, 2)
	fake.partHook = func(int) string {
		time.Sleep(2 * time.Millisecond) // let parts pile up if they could
		return ""
	}
	// Warm up the client so its one-time allocations are not counted.
	if _, err := s.Upload(context.Background(), "warm", strings.NewReader("x"), UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	r, _ := stream(2, 100*mib)
	// Count only what the uploader and the SDK allocate.
	fake.discard = true

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := s.Upload(context.Background(), "big", r, UploadOptions{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != 100*mib {
		t.Errorf("uploaded %d bytes, want %d", res.Size, 100*mib)
	}
	if got := fake.maxInflight(); got > 2 {
		t.Errorf("%d parts in flight, want at most 2", got)
	}
	// Three 5 MiB buffers plus the requests' small change; buffering the
	// stream would cost 100 MiB.
	allocated := int64(after.TotalAlloc - before.TotalAlloc)
	if limit := int64(3*5*mib + 10*mib); allocated > limit {
		t.Errorf("allocated %d MiB, want at most %d MiB", allocated/mib, limit/mib)
	}
	t.Logf("allocated %.1f MiB for a 100 MiB stream", float64(allocated)/mib)
}

func TestUploadAbortsOnError(t *testing.T) {
	errBoom := errors.New("etcd exec failed")
	tests := []struct {
		name   string
		reader func() io.Reader
		hook   func(int) string
		cancel bool // cancel the context after the first part is stored
		want   func(error) bool
	}{
		{
			name: "reader fails mid-stream",
			reader: func() io.Reader {
				r, _ := stream(3, 7*mib)
				return io.MultiReader(r, iotest.ErrReader(errBoom))
			},
			want: func(err error) bool { return errors.Is(err, errBoom) },
		},
		{
			name: "reader fails before any byte",
			reader: func() io.Reader {
				return iotest.ErrReader(errBoom)
			},
			want: func(err error) bool { return errors.Is(err, errBoom) },
		},
		{
			name: "truncated stream is not an end",
			reader: func() io.Reader {
				r, _ := stream(3, 2*mib)
				return io.MultiReader(r, iotest.ErrReader(io.ErrUnexpectedEOF))
			},
			want: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) },
		},
		{
			name:   "part rejected",
			reader: func() io.Reader { r, _ := stream(4, 22*mib); return r },
			hook: func(n int) string {
				if n == 3 {
					return "InvalidRequest"
				}
				return ""
			},
			want: func(err error) bool { return strings.Contains(err.Error(), "upload part 3") },
		},
		{
			name:   "context cancelled",
			reader: func() io.Reader { r, _ := stream(5, 40*mib); return r },
			cancel: true,
			want:   func(err error) bool { return errors.Is(err, context.Canceled) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := newFakeS3(t, "bucket")
			fake.partHook = tt.hook
			s := openFake(t, srv, "bucket", 5*mib, 2)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var id string
			_, err := s.Upload(ctx, "k", tt.reader(), UploadOptions{
				OnCreate: func(u string) { id = u },
				OnPart: func(int64) {
					if tt.cancel {
						cancel()
					}
				},
			})
			if err == nil || !tt.want(err) {
				t.Fatalf("Upload error = %v", err)
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error has several lines (an abort error joined?): %q", err)
			}
			acts := fake.Actions()
			if !slices.Contains(acts, "abort "+id) {
				t.Errorf("actions %v, want an abort of %s", acts, id)
			}
			if slices.Contains(acts, "complete") {
				t.Errorf("actions %v completed the upload", acts)
			}
			if p := fake.pending(); len(p) != 0 {
				t.Errorf("unfinished uploads left: %v", p)
			}
			if _, ok := fake.object("k"); ok {
				t.Error("an object was stored")
			}
		})
	}
}

func TestUploadJoinsAbortError(t *testing.T) {
	errBoom := errors.New("boom")
	fake, srv := newFakeS3(t, "bucket")
	fake.abortCode = "AccessDenied"
	s := openFake(t, srv, "bucket", 5*mib, 2)
	_, err := s.Upload(context.Background(), "k", iotest.ErrReader(errBoom), UploadOptions{})
	if !errors.Is(err, errBoom) {
		t.Fatalf("error %v does not wrap the reader's error", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "read stream for s3://bucket/k: boom\n") || !strings.Contains(msg, "abort multipart upload upload-1") {
		t.Errorf("error = %q, want the original error first, then the abort error", msg)
	}
}

func TestUploadTooManyParts(t *testing.T) {
	_, srv := newFakeS3(t, "bucket")
	s := openFake(t, srv, "bucket", 5*mib, 1)
	s.partSize, s.maxParts = 1, 3 // S3's limits in miniature
	if _, err := s.Upload(context.Background(), "k", strings.NewReader("abc"), UploadOptions{}); err != nil {
		t.Fatalf("Upload of exactly maxParts parts = %v", err)
	}
	_, err := s.Upload(context.Background(), "k", strings.NewReader("abcd"), UploadOptions{})
	if err == nil || !strings.Contains(err.Error(), "exceeds 3 parts of 1 bytes: raise the part size") {
		t.Fatalf("error = %v", err)
	}
}

func TestBufferPoolBound(t *testing.T) {
	p := newBufferPool(4, 2)
	ctx, cancel := context.WithCancel(context.Background())
	a, _ := p.get(ctx)
	b, _ := p.get(ctx)
	cancel()
	if _, err := p.get(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("third get = %v, want to block until cancelled", err)
	}
	p.put(a[:1])
	c, err := p.get(context.Background())
	if err != nil || len(c) != 4 {
		t.Fatalf("get after put = %d bytes, %v", len(c), err)
	}
	p.put(b)
	p.put(c)
	if p.made != 2 {
		t.Errorf("made %d buffers, want 2", p.made)
	}
}

func TestAbortUploads(t *testing.T) {
	fake, srv := newFakeS3(t, "bucket")
	s := openFake(t, srv, "bucket", 5*mib, 1)
	for _, key := range []string{"a/snap.db", "a/snap.db.old", "a/snap.db"} {
		fake.uploads[key+"-"+strings.Repeat("x", len(fake.uploads))] = &fakeUpload{key: key, parts: map[int][]byte{}, sums: map[int]string{}}
	}
	if err := s.AbortUploads(context.Background(), "a/snap.db"); err != nil {
		t.Fatal(err)
	}
	if p := fake.pending(); !slices.Equal(p, []string{"a/snap.db.old-x"}) {
		t.Errorf("pending uploads = %v, want only the other key's", p)
	}
}
