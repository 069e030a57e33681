package etcdsnap

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Verifier passes a snapshot stream through unchanged while checking it:
// an etcd snapshot file is a bolt database followed by the 32-byte SHA-256
// of that database. The verifier hashes everything but the last 32 bytes and,
// at the end of the stream, returns an error instead of io.EOF when the
// trailing hash or the expected size does not match, so that the multipart
// upload reading from it is aborted rather than completed.
type Verifier struct {
	r        io.Reader
	h        hash.Hash
	tail     []byte // the last (at most 32) bytes seen, not yet hashed
	n        int64
	wantSize int64
	wantSum  string
	fileSum  string // hex SHA-256 of every byte, set once the stream verified
}

// NewVerifier wraps r; size (when > 0) and sum (when not empty) are the
// expected file size and etcd SHA-256, as recorded when the snapshot was saved.
func NewVerifier(r io.Reader, size int64, sum string) *Verifier {
	return &Verifier{r: r, h: sha256.New(), tail: make([]byte, 0, 2*sha256.Size), wantSize: size, wantSum: sum}
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	if n > 0 {
		v.n += int64(n)
		v.absorb(p[:n])
	}
	if errors.Is(err, io.EOF) {
		if verr := v.verify(); verr != nil {
			return n, verr
		}
	}
	return n, err
}

// absorb hashes all but the newest 32 bytes seen so far.
func (v *Verifier) absorb(b []byte) {
	if len(b) >= sha256.Size {
		v.h.Write(v.tail)
		v.h.Write(b[:len(b)-sha256.Size])
		v.tail = append(v.tail[:0], b[len(b)-sha256.Size:]...)
		return
	}
	v.tail = append(v.tail, b...)
	if extra := len(v.tail) - sha256.Size; extra > 0 {
		v.h.Write(v.tail[:extra])
		v.tail = append(v.tail[:0], v.tail[extra:]...)
	}
}

func (v *Verifier) verify() error {
	if v.wantSize > 0 && v.n != v.wantSize {
		return fmt.Errorf("snapshot stream ended after %d of %d bytes", v.n, v.wantSize)
	}
	if len(v.tail) != sha256.Size {
		return fmt.Errorf("snapshot stream of %d bytes is too short to be an etcd snapshot", v.n)
	}
	got := hex.EncodeToString(v.h.Sum(nil))
	if got != hex.EncodeToString(v.tail) {
		return fmt.Errorf("snapshot stream is corrupt: etcd's trailing SHA-256 does not match the data")
	}
	if v.wantSum != "" && got != v.wantSum {
		return fmt.Errorf("snapshot stream differs from the saved snapshot: SHA-256 %s, want %s", got[:12], v.wantSum[:12])
	}
	// The file's own hash continues etcd's over the 32 trailing bytes.
	whole := v.h.(hash.Cloner)
	c, err := whole.Clone()
	if err != nil {
		return err
	}
	c.Write(v.tail)
	v.fileSum = hex.EncodeToString(c.Sum(nil))
	return nil
}

// Size returns the bytes read so far.
func (v *Verifier) Size() int64 { return v.n }

// EtcdSHA256 returns etcd's hex SHA-256 of the database (the trailing 32
// bytes), or "" until the stream has ended and verified.
func (v *Verifier) EtcdSHA256() string {
	if v.fileSum == "" {
		return ""
	}
	return hex.EncodeToString(v.tail)
}

// FileSHA256 returns the hex SHA-256 of the whole stream, trailing hash
// included, or "" until the stream has ended and verified.
func (v *Verifier) FileSHA256() string { return v.fileSum }

var _ io.Reader = (*Verifier)(nil)
