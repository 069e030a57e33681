// Package dryrun decides, in one place, what "nothing is changed" means: a
// transport for the Kubernetes clients that lets reads through and refuses
// every write, and a store decorator that does the same for S3. A dry run
// builds its clients through these, so a step can never change anything by
// mistake, and the steps hold no dry-run conditionals of their own.
//
// Layer: adapter (a decorator of the Kubernetes and S3 adapters).
package dryrun

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"k8s.io/client-go/rest"

	"github.com/hcpsnap/hcpsnap/s3"
)

// ErrWrite is returned for a write attempted during a dry run.
type ErrWrite struct{ What string }

func (e *ErrWrite) Error() string { return "dry run: refused to " + e.What }

// ReadOnly returns a copy of cfg whose requests may only read: GET and HEAD
// pass, anything else fails without reaching the server.
func ReadOnly(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return readOnlyTransport{rt} })
	return c
}

type readOnlyTransport struct{ next http.RoundTripper }

func (t readOnlyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return nil, &ErrWrite{What: fmt.Sprintf("%s %s", req.Method, req.URL.Path)}
	}
	return t.next.RoundTrip(req)
}

// Backend is the store a dry run reads from: the backup's store calls, over
// the S3 adapter's types.
type Backend interface {
	CheckWritable(ctx context.Context, prefix string) error
	Head(ctx context.Context, key string) (s3.ObjectInfo, bool, error)
	Upload(ctx context.Context, key string, r io.Reader, opts s3.UploadOptions) (s3.UploadResult, error)
	Put(ctx context.Context, key string, data []byte, opts s3.PutOptions) error
	Get(ctx context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error)
	GetRange(ctx context.Context, key string, off, n int64) ([]byte, error)
	AbortUploads(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]s3.ObjectInfo, error)
	Presign(ctx context.Context, key string, expires time.Duration) (string, time.Time, error)
	Delete(ctx context.Context, key string) error
}

var (
	_ Backend = (*s3.Store)(nil)
	_ Backend = Store{}
)

// Store wraps a store so that only reads reach it.
type Store struct{ Next Backend }

// CheckWritable is refused: proving writability writes a probe object.
func (s Store) CheckWritable(context.Context, string) error {
	return &ErrWrite{What: "write a probe object"}
}

// Head passes through.
func (s Store) Head(ctx context.Context, key string) (s3.ObjectInfo, bool, error) {
	return s.Next.Head(ctx, key)
}

// Get passes through.
func (s Store) Get(ctx context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error) {
	return s.Next.Get(ctx, key)
}

// GetRange passes through.
func (s Store) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	return s.Next.GetRange(ctx, key, off, n)
}

// Upload is refused.
func (s Store) Upload(_ context.Context, key string, _ io.Reader, _ s3.UploadOptions) (s3.UploadResult, error) {
	return s3.UploadResult{}, &ErrWrite{What: "upload " + key}
}

// Put is refused.
func (s Store) Put(_ context.Context, key string, _ []byte, _ s3.PutOptions) error {
	return &ErrWrite{What: "store " + key}
}

// AbortUploads is refused.
func (s Store) AbortUploads(_ context.Context, key string) error {
	return &ErrWrite{What: "abort uploads of " + key}
}

// List passes through.
func (s Store) List(ctx context.Context, prefix string) ([]s3.ObjectInfo, error) {
	return s.Next.List(ctx, prefix)
}

// Presign passes through: it signs locally and sends no request.
func (s Store) Presign(ctx context.Context, key string, expires time.Duration) (string, time.Time, error) {
	return s.Next.Presign(ctx, key, expires)
}

// Delete is refused.
func (s Store) Delete(_ context.Context, key string) error {
	return &ErrWrite{What: "delete " + key}
}
