package pullnode

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// archiveCheck passes the static resources archive through unchanged while
// a goroutine reads it as what cluster-backup.sh writes, a gzip-compressed
// tar: at the end of the stream it returns an error instead of io.EOF when
// the archive is not whole (a gzip CRC or length that does not match, a tar
// cut short) or the size is not the listed one, so that the multipart upload
// reading from it is aborted rather than completed.
type archiveCheck struct {
	r        io.Reader
	pw       *io.PipeWriter
	done     chan error
	h        hash.Hash
	n        int64
	wantSize int64
	sum      string
	err      error
}

var errArchiveClosed = errors.New("archive check closed")

func newArchiveCheck(r io.Reader, size int64) *archiveCheck {
	pr, pw := io.Pipe()
	a := &archiveCheck{r: r, pw: pw, done: make(chan error, 1), h: sha256.New(), wantSize: size}
	go func() {
		err := readArchive(pr)
		if err != nil {
			pr.CloseWithError(err)
		} else {
			_, err = io.Copy(io.Discard, pr)
			if errors.Is(err, errArchiveClosed) {
				err = nil
			}
		}
		a.done <- err
	}()
	return a
}

// readArchive reads every entry of a gzip-compressed tar, and the gzip
// stream to its end so that its CRC and length are checked.
func readArchive(r io.Reader) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("static resources archive is not gzip: %w", err)
	}
	tr := tar.NewReader(gz)
	for {
		_, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("static resources archive is not a whole tar: %w", err)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return fmt.Errorf("static resources archive is not whole: %w", err)
		}
	}
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return fmt.Errorf("static resources archive is not whole: %w", err)
	}
	return nil
}

// Read implements io.Reader.
func (a *archiveCheck) Read(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	n, err := a.r.Read(p)
	if n > 0 {
		a.n += int64(n)
		a.h.Write(p[:n])
		if _, werr := a.pw.Write(p[:n]); werr != nil {
			a.err = werr
			return n, werr
		}
	}
	if errors.Is(err, io.EOF) {
		a.pw.Close()
		if cerr := <-a.done; cerr != nil {
			a.err = cerr
			return n, cerr
		}
		if a.n != a.wantSize {
			a.err = fmt.Errorf("static resources archive stream ended after %d of %d bytes", a.n, a.wantSize)
			return n, a.err
		}
		a.sum = hex.EncodeToString(a.h.Sum(nil))
	}
	if err != nil {
		a.err = err
	}
	return n, err
}

// Close ends the checking goroutine if the stream did not reach its end.
func (a *archiveCheck) Close() {
	a.pw.CloseWithError(errArchiveClosed)
}

// Size returns the bytes read so far.
func (a *archiveCheck) Size() int64 { return a.n }

// FileSHA256 is the hex SHA-256 of the archive, "" until it has ended whole.
func (a *archiveCheck) FileSHA256() string { return a.sum }
