package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/hcpsnap/hcpsnap/internal/etcdsnap"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/runbook"
	"github.com/hcpsnap/hcpsnap/s3"
)

func upload(ctx context.Context, s *State) error {
	a := s.Out.Attempt
	if a == nil || a.ID == "" {
		return errors.New("no snapshot recorded: snapshot-save has not run in this run")
	}
	if s.via() == ViaStream {
		return streamUpload(ctx, s)
	}
	if err := uploadMember(ctx, s); err != nil {
		return err
	}
	return s.eachShard(ctx, func(ctx context.Context, v *State) error {
		if a := v.Out.Attempt; a == nil || a.ID == "" {
			return errors.New("no snapshot recorded: snapshot-save has not run for it in this run")
		}
		return uploadMember(ctx, v)
	})
}

// uploadMember streams the (shard's) member's snapshot file into its
// object, reading it as etcdctl writes it, and records its status.
func uploadMember(ctx context.Context, s *State) error {
	a := s.Out.Attempt
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, s.snapshotObject())
	a.ObjectKey = key
	st, err := probeWriter(ctx, s, a.Path)
	if err == nil && st.Missing {
		// The file went with a restarted pod, or with a clean-up that ran
		// without being recorded: only a new snapshot can go on.
		return &runbook.LostError{Step: StepSnapshotSave, Err: st.failure(s, a.Path)}
	}
	if err == nil {
		err = st.failure(s, a.Path)
	}
	if err != nil {
		return err
	}
	if st.Done {
		a.Bytes, a.EtcdSHA256 = st.Size, st.EtcdSum
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
	a.UploadStart = &start

	// The size and etcd's hash are known when the file was complete before
	// the upload began; otherwise the verifier learns them from the stream.
	size := a.Bytes
	src := newPodFileReader(ctx, s, a.Path, size)
	defer src.Close()
	verifier := etcdsnap.NewVerifier(src, size, a.EtcdSHA256)
	res, err := s.Clients.Store.Upload(ctx, key, verifier, s3.UploadOptions{
		Metadata: map[string]string{manifest.MetaRunID: s.Run.RunID, manifest.MetaSnapshotID: a.ID},
		OnCreate: func(id string) {
			a.UploadID = id
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
	a.UploadEnd, a.UploadID = &end, ""
	a.Bytes, a.EtcdSHA256, a.SHA256 = verifier.Size(), verifier.EtcdSHA256(), verifier.FileSHA256()
	if err := s.Save(ctx); err != nil {
		return err
	}
	secs := end.Sub(start).Seconds()
	log(ctx).Info("snapshot uploaded", "key", key, "bytes", res.Size, "MBps", fmt.Sprintf("%.1f", float64(res.Size)/1e6/max(secs, 1e-3)))
	return snapshotStatus(ctx, s)
}

// reuseUploaded reports whether the bucket already holds this snapshot,
// uploaded by this attempt before a crash: a multipart upload completes only
// after the whole stream verified, so the same attempt ID and size mean the
// same object. It then records the object's SHA-256 and the file's status.
func reuseUploaded(ctx context.Context, s *State, key string) (bool, error) {
	a := s.Out.Attempt
	info, ok, err := s.Clients.Store.Head(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	if info.Size != a.Bytes || info.Metadata[manifest.MetaSnapshotID] != a.ID {
		return false, nil
	}
	sum, err := hashObject(ctx, s.Clients.Store, key)
	if err != nil {
		return false, err
	}
	log(ctx).Info("the bucket already holds this snapshot; not uploading again", "key", key)
	a.UploadReused, a.SHA256 = true, sum
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
