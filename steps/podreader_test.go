package steps

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// rangeExec serves ranges of data as rangeScript does for a complete file,
// ending the first cuts streams early without an error, as a proxy that
// drops the last frames does.
type rangeExec struct {
	mu    sync.Mutex
	data  []byte
	cuts  int
	calls int
	fail  error
}

func (r *rangeExec) Exec(_ context.Context, _, _, _ string, cmd []string, _ io.Reader, stdout, _ io.Writer) error {
	r.mu.Lock()
	r.calls++
	calls := r.calls
	r.mu.Unlock()
	off, _ := strconv.ParseInt(cmd[5], 10, 64)
	n, _ := strconv.ParseInt(cmd[6], 10, 64)
	chunk := r.data[off:min(off+n, int64(len(r.data)))]
	if calls <= r.cuts {
		chunk = chunk[:len(chunk)/3]
	}
	_, err := stdout.Write(chunk)
	if err == nil && r.fail != nil {
		return r.fail
	}
	return err
}

func TestPodFileReader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB
	tests := []struct {
		name      string
		exec      *rangeExec
		size      int64
		rangeSize int64
		wantErr   string
		wantCalls int
	}{
		{name: "one clean stream", exec: &rangeExec{data: data}, size: int64(len(data)), wantCalls: 1},
		{name: "ranges read one after the other, each started ahead", exec: &rangeExec{data: data}, size: int64(len(data)), rangeSize: 100_000, wantCalls: 16},
		{name: "a cut range among ranges started ahead", exec: &rangeExec{data: data, cuts: 1}, size: int64(len(data)), rangeSize: 100_000, wantCalls: 18},
		{name: "streams cut early are read on from where they stopped", exec: &rangeExec{data: data, cuts: 3}, size: int64(len(data)), wantCalls: 4},
		{name: "a file shorter than recorded fails", exec: &rangeExec{data: data[:1000]}, size: int64(len(data)), wantErr: "shorter than snapshot-save recorded"},
		{name: "an exec that keeps failing fails", exec: &rangeExec{data: data[:10], fail: errors.New("pod gone")}, size: int64(len(data)), wantErr: "pod gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &State{Opts: Options{Member: "etcd-0", Container: "etcd"}, Out: &Outputs{HCPNamespace: "ns"}, Clients: Clients{Exec: tt.exec}}
			r := newPodFileReader(context.Background(), s, "/var/lib/data/x.db", tt.size)
			if tt.rangeSize > 0 {
				r.rangeSize = tt.rangeSize
			}
			got, err := io.ReadAll(r)
			r.Close()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					t.Fatal("the error would read as a normal end of stream to an uploader")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes that differ from the %d of the file", len(got), len(data))
			}
			if tt.exec.calls != tt.wantCalls {
				t.Fatalf("%d execs, want %d", tt.exec.calls, tt.wantCalls)
			}
		})
	}
}
