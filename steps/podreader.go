package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Reading the snapshot out of the pod goes range by range: an exec stream
// that ends early — a cut connection, a restarted apiserver, a proxy that
// drops the last frames while ending the stream cleanly — then costs one
// more exec from the first missing byte instead of the whole upload.
const (
	podReadRange = 64 << 20
	// podReadAttempts bounds the execs in a row that bring no byte.
	podReadAttempts = 4
)

// podFileReader reads size bytes of a file in the member's container.
type podFileReader struct {
	ctx  context.Context
	s    *State
	path string
	size int64

	off    int64 // next byte to deliver
	end    int64 // end of the range being read
	cur    *io.PipeReader
	done   chan struct{} // closed when the current exec has returned
	err    error         // the current exec's error, valid once done is closed
	stderr bytes.Buffer
	misses int // execs in a row that ended early without progress
	cancel context.CancelFunc
}

func newPodFileReader(ctx context.Context, s *State, path string, size int64) *podFileReader {
	return &podFileReader{ctx: ctx, s: s, path: path, size: size}
}

// Read implements io.Reader.
func (r *podFileReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if r.cur == nil {
			if err := r.ctx.Err(); err != nil {
				return 0, err
			}
			r.start()
		}
		n, err := r.cur.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.misses = 0
		}
		if err == nil {
			return n, nil
		}
		execErr := r.stop()
		if execErr == nil && !errors.Is(err, io.EOF) {
			execErr = err
		}
		if r.off == r.end {
			if n > 0 {
				return n, nil
			}
			continue // the range is complete: read the next one
		}
		// The stream ended before its range did: read again from r.off.
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if n == 0 {
			r.misses++
		}
		if r.misses >= podReadAttempts {
			if execErr == nil {
				execErr = errors.New("the file in the pod is shorter than snapshot-save recorded")
			}
			return n, fmt.Errorf("read %s from pod %s: the stream ended at byte %d of %d, %d times in a row: %w",
				r.path, r.s.Opts.Member, r.off, r.size, r.misses, execErr)
		}
		log(r.ctx).Warn("snapshot stream from the pod ended early; reading on from there", "at", r.off, "of", r.size, "err", execErr)
		if n > 0 {
			return n, nil
		}
	}
}

// start begins an exec that streams [off, min(off+range, size)).
func (r *podFileReader) start() {
	r.end = min(r.off+podReadRange, r.size)
	ctx, cancel := context.WithCancel(r.ctx)
	pr, pw := io.Pipe()
	r.cur, r.cancel, r.done = pr, cancel, make(chan struct{})
	r.stderr.Reset()
	// tail seeks to the offset in a regular file; head stops at the range end.
	cmd := []string{"sh", "-c", `tail -c +"$1" "$2" | head -c "$3"`, "sh",
		strconv.FormatInt(r.off+1, 10), r.path, strconv.FormatInt(r.end-r.off, 10)}
	done := r.done
	go func() {
		defer close(done)
		err := r.s.Clients.Exec.Exec(ctx, r.s.Out.HCPNamespace, r.s.Opts.Member, r.s.Opts.Container, cmd, nil, pw, &r.stderr)
		if err != nil {
			err = fmt.Errorf("%w (%s)", err, firstLine(r.stderr.String()))
		}
		r.err = err
		pw.CloseWithError(err) // nil: io.EOF
	}()
}

// stop ends the current exec and returns its error, if any.
func (r *podFileReader) stop() error {
	if r.cur == nil {
		return nil
	}
	r.cancel()
	// Drain so that the exec's writer is never left blocked.
	r.cur.CloseWithError(errors.New("range read ended"))
	<-r.done
	r.cur = nil
	return r.err
}

// Close stops any exec still running.
func (r *podFileReader) Close() error {
	_ = r.stop()
	return nil
}
