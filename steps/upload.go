package steps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// Object metadata that lets a later run recognise an identical snapshot.
const (
	MetaEtcdSHA256 = "etcd-sha256"
	MetaRunID      = "hcpsnap-run"
)

func upload(ctx context.Context, s *State) error {
	if s.Out.SnapshotPath == "" || s.Out.EtcdSHA256 == "" {
		return errors.New("no snapshot recorded: snapshot-save has not run in this run")
	}
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, snapshotObjectName)
	s.Out.ObjectKey = key
	info, ok, err := s.Clients.Store.Head(ctx, key)
	if err != nil {
		return err
	}
	if ok && info.Size == s.Out.SnapshotBytes && info.Metadata[MetaEtcdSHA256] == s.Out.EtcdSHA256 {
		// The file is the database followed by etcd's SHA-256 of it, and a
		// multipart upload completes only after the whole stream verified:
		// equal size and etcd hash mean an equal object. Hash it to record
		// the object's own SHA-256 without moving the snapshot again.
		sum, err := hashObject(ctx, s.Clients.Store, key)
		if err != nil {
			return err
		}
		log(ctx).Info("the bucket already holds this snapshot; not uploading again", "key", key)
		s.Out.UploadReused, s.Out.SHA256 = true, sum
		return nil
	}
	// A crashed earlier attempt may have left a multipart upload behind.
	if err := s.Clients.Store.AbortUploads(ctx, key); err != nil {
		return err
	}
	start := s.now().UTC()
	s.Out.UploadStart = &start

	pr, pw := io.Pipe()
	verifier := newEtcdVerifier(pr, s.Out.SnapshotBytes, s.Out.EtcdSHA256)
	// The exec goroutine reports its failure through the pipe, never by
	// exiting: the uploader then sees the error and aborts the upload.
	execCtx, cancelExec := context.WithCancel(ctx)
	defer cancelExec()
	execDone := make(chan struct{})
	go func() {
		defer close(execDone)
		var stderr bytes.Buffer
		err := s.Clients.Exec.Exec(execCtx, s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container,
			[]string{"cat", s.Out.SnapshotPath}, nil, pw, &stderr)
		if err != nil {
			err = fmt.Errorf("read %s from pod %s: %w (%s)", s.Out.SnapshotPath, s.Opts.Member, err, firstLine(stderr.String()))
		}
		pw.CloseWithError(err) // nil closes with io.EOF
	}()
	total := s.Out.SnapshotBytes
	res, err := s.Clients.Store.Upload(ctx, key, verifier, UploadOptions{
		Metadata: map[string]string{MetaEtcdSHA256: s.Out.EtcdSHA256, MetaRunID: s.Run.RunID},
		OnCreate: func(id string) {
			s.Out.UploadID = id
			_ = s.Save(ctx)
		},
		OnPart: func(done int64) {
			s.emit(Event{MessageType: "upload_progress", Step: StepUpload, BytesDone: done, BytesTotal: total})
		},
	})
	// Unblock the exec goroutine whatever happened, and drain the pipe so it
	// can finish writing its error.
	cancelExec()
	pr.CloseWithError(errors.New("upload ended"))
	<-execDone
	if err != nil {
		return fmt.Errorf("upload s3 object %s: %w", key, err)
	}
	if res.Size != s.Out.SnapshotBytes {
		return fmt.Errorf("uploaded %d bytes of a %d-byte snapshot", res.Size, s.Out.SnapshotBytes)
	}
	end := s.now().UTC()
	s.Out.UploadEnd, s.Out.SHA256, s.Out.UploadID = &end, res.SHA256, ""
	secs := end.Sub(start).Seconds()
	log(ctx).Info("snapshot uploaded", "key", key, "bytes", res.Size, "MBps", fmt.Sprintf("%.1f", float64(res.Size)/1e6/max(secs, 1e-3)))
	return nil
}

// hashObject streams an object and returns its hex SHA-256.
func hashObject(ctx context.Context, store Store, key string) (string, error) {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", fmt.Errorf("read s3 object %s: %w", key, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// etcdVerifier passes a snapshot stream through unchanged while checking it:
// an etcd snapshot file is a bolt database followed by the 32-byte SHA-256
// of that database. The verifier hashes everything but the last 32 bytes and,
// at the end of the stream, returns an error instead of io.EOF when the
// trailing hash or the expected size does not match, so that the multipart
// upload reading from it is aborted rather than completed.
type etcdVerifier struct {
	r        io.Reader
	h        hash.Hash
	tail     []byte // the last (at most 32) bytes seen, not yet hashed
	n        int64
	wantSize int64
	wantSum  string
}

func newEtcdVerifier(r io.Reader, size int64, sum string) *etcdVerifier {
	return &etcdVerifier{r: r, h: sha256.New(), tail: make([]byte, 0, 2*sha256.Size), wantSize: size, wantSum: sum}
}

// Read implements io.Reader.
func (v *etcdVerifier) Read(p []byte) (int, error) {
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
func (v *etcdVerifier) absorb(b []byte) {
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

func (v *etcdVerifier) verify() error {
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
	return nil
}

var _ io.Reader = (*etcdVerifier)(nil)

// durationSeconds is the length of [start, end] in seconds, 0 when unknown.
func durationSeconds(start, end *time.Time) float64 {
	if start == nil || end == nil {
		return 0
	}
	return end.Sub(*start).Seconds()
}
