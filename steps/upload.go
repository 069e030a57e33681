package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hcpsnap/hcpsnap/internal/etcdsnap"
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

	src := newPodFileReader(ctx, s, s.Out.SnapshotPath, s.Out.SnapshotBytes)
	defer src.Close()
	verifier := etcdsnap.NewVerifier(src, s.Out.SnapshotBytes, s.Out.EtcdSHA256)
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
	src.Close()
	if err != nil {
		return fmt.Errorf("upload s3 object %s: %w", key, err)
	}
	if res.Size != s.Out.SnapshotBytes {
		return fmt.Errorf("uploaded %d bytes of a %d-byte snapshot", res.Size, s.Out.SnapshotBytes)
	}
	end := s.now().UTC()
	s.Out.UploadEnd, s.Out.SHA256, s.Out.UploadID = &end, verifier.FileSHA256(), ""
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

// durationSeconds is the length of [start, end] in seconds, 0 when unknown.
func durationSeconds(start, end *time.Time) float64 {
	if start == nil || end == nil {
		return 0
	}
	return end.Sub(*start).Seconds()
}
