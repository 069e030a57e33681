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
// more exec from the first missing byte instead of the whole upload. Each
// range waits in the pod until etcdctl has written it (rangeScript), so the
// file can be read while it grows.
const (
	podReadRange = 64 << 20
	// podReadAttempts bounds the execs in a row that bring no byte.
	podReadAttempts = 4
)

// podFileReader reads the snapshot file in the member's container.
type podFileReader struct {
	ctx  context.Context
	s    *State
	path string
	size int64 // -1 until known: the writer has not ended yet

	off    int64 // next byte to deliver
	end    int64 // end of the range being read
	cur    *io.PipeReader
	done   chan struct{} // closed when the current exec has returned
	err    error         // the current exec's error, valid once done is closed
	stderr bytes.Buffer
	misses int // execs in a row that ended early without progress
	cancel context.CancelFunc
}

// newPodFileReader reads the snapshot at path; size 0 means not yet known.
func newPodFileReader(ctx context.Context, s *State, path string, size int64) *podFileReader {
	if size <= 0 {
		size = -1
	}
	return &podFileReader{ctx: ctx, s: s, path: path, size: size}
}

// Read implements io.Reader.
func (r *podFileReader) Read(p []byte) (int, error) {
	for {
		if r.size >= 0 && r.off >= r.size {
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
		if writerFailed(execErr) {
			return n, fmt.Errorf("read %s from pod %s: %w", r.path, r.s.Opts.Member, execErr)
		}
		if r.off == r.end {
			if n > 0 {
				return n, nil
			}
			continue // the range is complete: read the next one
		}
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if r.size < 0 && execErr == nil {
			// A short range: the end of the file, if etcdctl has ended.
			if err := r.learnSize(); err != nil {
				return n, err
			}
			if r.off == r.size {
				if n > 0 {
					return n, nil
				}
				continue
			}
		}
		// The stream ended before its range did: read again from r.off.
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

// learnSize asks the pod whether etcdctl has ended and records the size of
// the complete file.
func (r *podFileReader) learnSize() error {
	st, err := probeWriter(r.ctx, r.s, r.path)
	switch {
	case err != nil:
		return err
	case st.Done && st.Status != 0:
		return fmt.Errorf("etcdctl snapshot save %s failed with status %d: %s", r.path, st.Status, st.Error)
	case st.Missing:
		return fmt.Errorf("snapshot %s is gone from pod %s while it was read", r.path, r.s.Opts.Member)
	case st.Done:
		if st.Size < r.off {
			return fmt.Errorf("read %d bytes of %s, but the complete file has %d", r.off, r.path, st.Size)
		}
		r.size = st.Size
	}
	return nil
}

// start begins an exec that streams [off, off+range), cut at the size once
// known.
func (r *podFileReader) start() {
	r.end = r.off + podReadRange
	if r.size >= 0 {
		r.end = min(r.end, r.size)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	pr, pw := io.Pipe()
	r.cur, r.cancel, r.done = pr, cancel, make(chan struct{})
	r.stderr.Reset()
	cmd := []string{"sh", "-c", rangeScript, "sh", r.path,
		strconv.FormatInt(r.off, 10), strconv.FormatInt(r.end-r.off, 10), r.s.stallSeconds()}
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
