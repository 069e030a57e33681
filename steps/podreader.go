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
// file can be read while it grows. The exec of the next range starts while
// the current one streams, so that setting up an exec (a round trip through
// the apiserver to the node) never leaves the stream idle; until it is read,
// its output waits in the pod, held back by the connection.
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
	// rangeSize is the bytes one exec streams (podReadRange; tests lower it).
	rangeSize int64

	off    int64      // next byte to deliver
	end    int64      // end of the range being read
	cur    *rangeRead // the range being read
	next   *rangeRead // the range after it, started ahead
	misses int        // execs in a row that ended early without progress
}

// rangeRead is the exec that streams [off, end) of the file.
type rangeRead struct {
	off, end int64
	out      *io.PipeReader
	done     chan struct{} // closed when the exec has returned
	err      error         // the exec's error, valid once done is closed
	stderr   bytes.Buffer
	cancel   context.CancelFunc
}

// newPodFileReader reads the snapshot at path; size 0 means not yet known.
func newPodFileReader(ctx context.Context, s *State, path string, size int64) *podFileReader {
	if size <= 0 {
		size = -1
	}
	return &podFileReader{ctx: ctx, s: s, path: path, size: size, rangeSize: podReadRange}
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
		n, err := r.cur.out.Read(p)
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
	if err == nil {
		err = st.failure(r.s, r.path)
	}
	switch {
	case err != nil:
		return err
	case st.Done && st.Size < r.off:
		return fmt.Errorf("read %d bytes of %s, but the complete file has %d", r.off, r.path, st.Size)
	case st.Done:
		r.size = st.Size
	}
	return nil
}

// start makes the range from off the current one, taking the range started
// ahead when it begins there, and starts the range after it.
func (r *podFileReader) start() {
	if r.next != nil && r.next.off == r.off {
		r.cur, r.next = r.next, nil
	} else {
		r.next.stop() // a re-read moved the ranges: start afresh
		r.next = nil
		r.cur = r.launch(r.off)
	}
	r.end = r.cur.end
	if r.size < 0 || r.end < r.size {
		r.next = r.launch(r.end)
	}
}

// launch begins an exec that streams [off, off+range), cut at the size once
// known.
func (r *podFileReader) launch(off int64) *rangeRead {
	end := off + r.rangeSize
	if r.size >= 0 {
		end = min(end, r.size)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	pr, pw := io.Pipe()
	rr := &rangeRead{off: off, end: end, out: pr, done: make(chan struct{}), cancel: cancel}
	cmd := []string{"sh", "-c", rangeScript, "sh", r.path,
		strconv.FormatInt(off, 10), strconv.FormatInt(end-off, 10), r.s.stallSeconds()}
	go func() {
		defer close(rr.done)
		err := r.s.Clients.Exec.Exec(ctx, r.s.Out.HCPNamespace, r.s.Opts.Member, r.s.Opts.Container, cmd, nil, pw, &rr.stderr)
		if err != nil {
			err = fmt.Errorf("%w (%s)", err, firstLine(rr.stderr.String()))
		}
		rr.err = err
		pw.CloseWithError(err) // nil: io.EOF
	}()
	return rr
}

// stop ends the exec and returns its error, if any; a nil range is stopped.
func (rr *rangeRead) stop() error {
	if rr == nil {
		return nil
	}
	rr.cancel()
	// Drain so that the exec's writer is never left blocked.
	rr.out.CloseWithError(errors.New("range read ended"))
	<-rr.done
	return rr.err
}

// stop ends the current range and returns its exec's error, if any.
func (r *podFileReader) stop() error {
	err := r.cur.stop()
	r.cur = nil
	return err
}

// Close stops every exec still running.
func (r *podFileReader) Close() error {
	_ = r.stop()
	_ = r.next.stop()
	r.next = nil
	return nil
}
