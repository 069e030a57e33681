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

// Object metadata that lets a later run recognise its own upload.
const (
	MetaRunID      = "hcpsnap-run"
	MetaSnapshotID = "hcpsnap-snapshot"
)

func upload(ctx context.Context, s *State) error {
	if s.Out.SnapshotPath == "" || s.Out.SnapshotID == "" {
		return errors.New("no snapshot recorded: snapshot-save has not run in this run")
	}
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, snapshotObjectName)
	s.Out.ObjectKey = key
	st, err := probeWriter(ctx, s, s.Out.SnapshotPath)
	if err == nil {
		err = st.failure(s, s.Out.SnapshotPath)
	}
	if err != nil {
		return err
	}
	if st.Done {
		s.Out.SnapshotBytes, s.Out.EtcdSHA256 = st.Size, st.EtcdSum
		reused, err := reuseUploaded(ctx, s, key)
		if err != nil || reused {
			return err
		}
	} else {
		log(ctx).Info("uploading the snapshot while etcdctl still writes it")
	}
	// A crashed earlier attempt may have left a multipart upload behind.
	if err := s.Clients.Store.AbortUploads(ctx, key); err != nil {
		return err
	}
	start := s.now().UTC()
	s.Out.UploadStart = &start

	// The size and etcd's hash are known when the file was complete before
	// the upload began; otherwise the verifier learns them from the stream.
	size := s.Out.SnapshotBytes
	src := newPodFileReader(ctx, s, s.Out.SnapshotPath, size)
	defer src.Close()
	verifier := etcdsnap.NewVerifier(src, size, s.Out.EtcdSHA256)
	res, err := s.Clients.Store.Upload(ctx, key, verifier, UploadOptions{
		Metadata: map[string]string{MetaRunID: s.Run.RunID, MetaSnapshotID: s.Out.SnapshotID},
		OnCreate: func(id string) {
			s.Out.UploadID = id
			_ = s.Save(ctx)
		},
		OnPart: func(done int64) {
			total := size
			if total == 0 {
				total = max(s.Out.EtcdDBSize+32, done) // an estimate until the file is complete
			}
			s.emit(Event{MessageType: "upload_progress", Step: StepUpload, BytesDone: done, BytesTotal: total})
		},
	})
	src.Close()
	if err != nil {
		return fmt.Errorf("upload s3 object %s: %w", key, err)
	}
	if res.Size != verifier.Size() {
		return fmt.Errorf("uploaded %d bytes of a %d-byte snapshot", res.Size, verifier.Size())
	}
	end := s.now().UTC()
	s.Out.UploadEnd, s.Out.UploadID = &end, ""
	s.Out.SnapshotBytes, s.Out.EtcdSHA256, s.Out.SHA256 = verifier.Size(), verifier.EtcdSHA256(), verifier.FileSHA256()
	if err := s.Save(ctx); err != nil {
		return err
	}
	secs := end.Sub(start).Seconds()
	log(ctx).Info("snapshot uploaded", "key", key, "bytes", res.Size, "MBps", fmt.Sprintf("%.1f", float64(res.Size)/1e6/max(secs, 1e-3)))
	return snapshotStatus(ctx, s)
}

// reuseUploaded reports whether the bucket already holds this snapshot,
// uploaded by this attempt before a crash: a multipart upload completes only
// after the whole stream verified, so the same snapshot ID and size mean the
// same object. It then records the object's SHA-256 and the file's status.
func reuseUploaded(ctx context.Context, s *State, key string) (bool, error) {
	info, ok, err := s.Clients.Store.Head(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	if info.Size != s.Out.SnapshotBytes || info.Metadata[MetaSnapshotID] != s.Out.SnapshotID {
		return false, nil
	}
	sum, err := hashObject(ctx, s.Clients.Store, key)
	if err != nil {
		return false, err
	}
	log(ctx).Info("the bucket already holds this snapshot; not uploading again", "key", key)
	s.Out.UploadReused, s.Out.SHA256 = true, sum
	return true, snapshotStatus(ctx, s)
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
