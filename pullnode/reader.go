package pullnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// Executor runs a command in a container of a pod through pods/exec
// (internal/kube.Executor), streaming its output.
type Executor interface {
	Exec(ctx context.Context, namespace, pod, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var _ Executor = (*kube.Executor)(nil)

// Reading a file out of the pod goes range by range, as a backup reads its
// snapshot out of the etcd pod: an exec stream that ends early then costs
// one more exec from the first missing byte, not the whole upload.
const (
	readRange = 64 << 20
	// readAttempts bounds the execs in a row that bring no byte.
	readAttempts = 4
)

// fileReader reads a file of known size in the pod with `node-files cat`.
type fileReader struct {
	ctx       context.Context
	exec      Executor
	namespace string
	pod       string
	path      string
	size      int64
	rangeSize int64

	off    int64
	cur    *rangeRead
	misses int
	onWarn func(msg string, kv ...any)
}

// rangeRead is the exec that streams [off, end) of the file.
type rangeRead struct {
	end    int64
	out    *io.PipeReader
	done   chan struct{}
	err    error
	stderr syncBuffer
	cancel context.CancelFunc
}

func newFileReader(ctx context.Context, exec Executor, namespace, pod, path string, size int64, warn func(string, ...any)) *fileReader {
	return &fileReader{ctx: ctx, exec: exec, namespace: namespace, pod: pod, path: path, size: size, rangeSize: readRange, onWarn: warn}
}

// Read implements io.Reader.
func (r *fileReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if r.cur == nil {
			if err := r.ctx.Err(); err != nil {
				return 0, err
			}
			r.cur = r.launch(r.off)
		}
		if rest := r.cur.end - r.off; int64(len(p)) > rest {
			p = p[:rest]
		}
		n, err := r.cur.out.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.misses = 0
		}
		if r.off == r.cur.end {
			// The range is complete whatever its exec says next.
			_ = r.stop()
			if n > 0 {
				return n, nil
			}
			continue
		}
		if err == nil {
			return n, nil
		}
		execErr := r.stop()
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		var exit *kube.ExitError
		if errors.As(execErr, &exit) {
			return n, fmt.Errorf("read %s in pod %s: %w", r.path, r.pod, execErr)
		}
		if n == 0 {
			r.misses++
		}
		if r.misses >= readAttempts {
			if execErr == nil {
				execErr = errors.New("the file in the pod is shorter than listed")
			}
			return n, fmt.Errorf("read %s in pod %s: the stream ended at byte %d of %d, %d times in a row: %w", r.path, r.pod, r.off, r.size, r.misses, execErr)
		}
		if r.onWarn != nil {
			r.onWarn("file stream from the pod ended early; reading on from there", "file", r.path, "at", r.off, "of", r.size, "err", execErr)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// launch begins an exec that streams [off, off+range) of the file.
func (r *fileReader) launch(off int64) *rangeRead {
	end := min(off+r.rangeSize, r.size)
	ctx, cancel := context.WithCancel(r.ctx)
	pr, pw := io.Pipe()
	rr := &rangeRead{end: end, out: pr, done: make(chan struct{}), cancel: cancel}
	cmd := []string{Binary, NodeFilesCommand, "cat", r.path, itoa(off), itoa(end - off)}
	go func() {
		defer close(rr.done)
		err := r.exec.Exec(ctx, r.namespace, r.pod, Container, cmd, nil, sink{pw}, &rr.stderr)
		if err != nil {
			if msg := oneLine(rr.stderr.String()); msg != "" {
				err = fmt.Errorf("%w (%s)", err, msg)
			}
		}
		rr.err = err
		pw.CloseWithError(err) // nil: io.EOF
	}()
	return rr
}

// stop ends the current range's exec and returns its error.
func (r *fileReader) stop() error {
	rr := r.cur
	if rr == nil {
		return nil
	}
	r.cur = nil
	rr.cancel()
	rr.out.CloseWithError(errors.New("range read ended"))
	<-rr.done
	return rr.err
}

// sink is the exec's stdout: the pipe to the reader while it reads, and a
// drain once it stopped. A write that failed would be logged by client-go
// on stderr, in its own format, in the middle of hcpsnap's log; and its
// stream copy may still write after the exec returned.
type sink struct{ pw *io.PipeWriter }

func (s sink) Write(p []byte) (int, error) {
	if _, err := s.pw.Write(p); err != nil {
		return len(p), nil // the reader has stopped: nothing wants these bytes
	}
	return len(p), nil
}

// Close stops the exec still running, if any.
func (r *fileReader) Close() error {
	_ = r.stop()
	return nil
}

// syncBuffer is a buffer that the exec's stream copy may write after the
// exec returned; reads of it happen once the exec has returned.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 64<<10 {
		return len(p), nil
	}
	return s.b.Write(p)
}

// oneLine joins the fields of s into one line, at most 300 characters.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
