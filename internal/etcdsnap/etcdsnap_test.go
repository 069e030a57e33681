package etcdsnap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// makeSnapshot returns n pseudo-random bytes followed by their SHA-256, the
// shape of an etcd snapshot file.
func makeSnapshot(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestVerifier(t *testing.T) {
	snap := makeSnapshot(1, 100_000)
	sum := sha256Hex(snap[:len(snap)-32])
	size := int64(len(snap))
	readers := map[string]func([]byte) io.Reader{
		"whole":    func(b []byte) io.Reader { return bytes.NewReader(b) },
		"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
		"halves":   func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"data+EOF": func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) },
	}
	tests := []struct {
		name     string
		data     []byte
		size     int64
		sum      string
		wantErr  string
		wantData bool
	}{
		{name: "valid", data: snap, size: size, sum: sum},
		{name: "valid, size and hash unknown", data: snap},
		{name: "exactly 32 bytes of an empty database", data: makeSnapshot(2, 0)},
		{name: "corrupt", data: append(slices.Clone(snap[:10]), append([]byte{snap[10] ^ 1}, snap[11:]...)...), size: size, sum: sum, wantErr: "corrupt"},
		{name: "truncated", data: snap[:len(snap)-1], size: size, sum: sum, wantErr: "ended after"},
		{name: "longer than saved", data: append(slices.Clone(snap), 0), size: size, sum: sum, wantErr: "ended after"},
		{name: "too short", data: snap[:20], wantErr: "too short"},
		{name: "another snapshot", data: makeSnapshot(3, 100_000), size: size, sum: sum, wantErr: "differs from the saved snapshot"},
	}
	for _, tt := range tests {
		for rname, mk := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				v := NewVerifier(mk(tt.data), tt.size, tt.sum)
				got, err := io.ReadAll(v)
				if tt.wantErr == "" {
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, tt.data) {
						t.Error("the verifier changed the stream")
					}
					if v.FileSHA256() != sha256Hex(tt.data) || v.Size() != int64(len(tt.data)) ||
						v.EtcdSHA256() != sha256Hex(tt.data[:len(tt.data)-32]) {
						t.Errorf("file SHA-256 %q, etcd SHA-256 %q, size %d; want the stream's", v.FileSHA256(), v.EtcdSHA256(), v.Size())
					}
					return
				}
				if v.FileSHA256() != "" || v.EtcdSHA256() != "" {
					t.Error("a stream that failed verification has a SHA-256")
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
			})
		}
	}
}
