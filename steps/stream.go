package steps

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/internal/etcdsnap"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/runbook"
	"github.com/hcpsnap/hcpsnap/s3"
)

// --via stream: hcpsnap opens etcd's snapshot API on the member through the
// apiserver's port-forward and pipes the stream into the multipart upload.
// Nothing is written in the pod and no program of its image runs.
//
// The stream outlives snapshot-save: the API comes back (scale-up, resume)
// while it flows, and upload-snapshot waits for its end. It lives in this
// process only, so a broken stream, or a run resumed after this process
// died, cannot continue it: upload-snapshot then reports the snapshot lost
// and the engine takes a new one, with the same guarantees as the first
// (offline, the API goes down again), at most Options.SnapshotRetries times.

// via is how this run takes its snapshot; runs recorded before the choice
// existed took it in the pod.
func (s *State) via() string {
	if s.Opts.Via == "" {
		return ViaExec
	}
	return s.Opts.Via
}

// liveStream is a snapshot on its way from etcd into the bucket. The
// goroutine that runs the upload writes its fields; the steps read them
// after done is closed.
type liveStream struct {
	attempt   string
	cancel    context.CancelFunc
	firstByte chan struct{}
	// release lets the stream go on past its first bytes (holdStream).
	release     chan struct{}
	releaseOnce sync.Once
	done        chan struct{}
	bytes       atomic.Int64
	verifier    *etcdsnap.Verifier
	scanner     *etcdsnap.Scanner

	mu        sync.Mutex
	sourceErr error // the stream's own failure, as opposed to the bucket's

	res s3.UploadResult
	err error
}

// stop cancels the stream and its upload, and waits until the upload has
// ended (a multipart upload it had begun is aborted by then).
func (ls *liveStream) stop() {
	ls.cancel()
	ls.goOn() // a held Read then fails on the cancelled stream
	<-ls.done
}

// goOn lets the stream flow on past its first bytes.
func (ls *liveStream) goOn() { ls.releaseOnce.Do(func() { close(ls.release) }) }

// streamSource is what the upload reads: etcd's stream through the
// verifier, feeding the scanner that finds the snapshot's status.
type streamSource struct{ ls *liveStream }

func (src *streamSource) Read(p []byte) (int, error) {
	ls := src.ls
	if ls.bytes.Load() > 0 {
		// Held after the first bytes until the API is back (holdStream).
		<-ls.release
	}
	n, err := ls.verifier.Read(p)
	if n > 0 {
		if ls.bytes.Add(int64(n)) == int64(n) {
			close(ls.firstByte)
		}
		_, _ = ls.scanner.Write(p[:n])
	}
	if err != nil && !errors.Is(err, io.EOF) {
		ls.mu.Lock()
		if ls.sourceErr == nil {
			ls.sourceErr = err
		}
		ls.mu.Unlock()
	}
	return n, err
}

func (ls *liveStream) run(ctx context.Context, store Store, key string, meta map[string]string, rc io.ReadCloser) {
	defer close(ls.done)
	res, err := store.Upload(ctx, key, &streamSource{ls: ls}, s3.UploadOptions{Metadata: meta})
	ls.mu.Lock()
	if ls.sourceErr == nil && err != nil && ctx.Err() != nil {
		err = fmt.Errorf("snapshot stream stopped: %w", err)
	}
	ls.res, ls.err = res, err
	ls.mu.Unlock()
	rc.Close()
}

// sourceError is the stream's own failure, read once the upload ended.
func (ls *liveStream) sourceError() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.sourceErr
}

// stopStream ends this process's live stream, if any.
func (s *State) stopStream() {
	if s.stream != nil {
		s.stream.stop()
		s.stream = nil
	}
}

// checkMemberStream proves, before any change, that the member answers
// through port-forward with the control plane's own client certificate, and
// reads the database size.
func checkMemberStream(ctx context.Context, s *State) error {
	size, version, err := s.Clients.Etcd.Status(ctx, s.Out.HCPNamespace, s.Opts.Member)
	if err != nil {
		return exitcode.Preconditionf("etcd member %s/%s does not answer through port-forward: %v; hcpsnap needs pods/portforward there and to read Secret etcd-client-tls and ConfigMap etcd-ca (deploy/rbac.yaml), or take the snapshot inside the pod with --via exec",
			s.Out.HCPNamespace, s.Opts.Member, err)
	}
	s.Out.EtcdDBSize = size
	log(ctx).Info("etcd member reached through port-forward", "version", version, "dbSizeMiB", size>>20)
	return nil
}

// streamSnapshot opens the member's snapshot stream into a multipart upload
// and returns once etcd has sent its first bytes: etcd has then opened the
// read transaction the snapshot is taken from, so the API may come back.
// With --hold-api-until-saved it returns when the stream has ended.
func streamSnapshot(ctx context.Context, s *State) error {
	s.stopStream()
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, snapshotObjectName)
	a := &Attempt{ID: fmt.Sprintf("%s-%d", s.Run.RunID, s.now().UnixNano()), Via: ViaStream, ObjectKey: key}
	s.Out.Attempt = a
	if err := s.Save(ctx); err != nil {
		return err
	}
	// A crashed earlier attempt may have left a multipart upload behind.
	if err := s.Clients.Store.AbortUploads(ctx, key); err != nil {
		return err
	}
	if err := waitMemberReady(ctx, s); err != nil {
		return err
	}
	// The stream outlives this step: it is stopped by upload-snapshot, or
	// by cleanup-pod-file when the run is undone, not by the step's end.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rc, err := s.Clients.Etcd.Snapshot(bg, s.Out.HCPNamespace, s.Opts.Member)
	if err != nil {
		cancel()
		return fmt.Errorf("open the snapshot stream of etcd member %s/%s: %w", s.Out.HCPNamespace, s.Opts.Member, err)
	}
	ls := &liveStream{attempt: a.ID, cancel: cancel, firstByte: make(chan struct{}), release: make(chan struct{}),
		done: make(chan struct{}), verifier: etcdsnap.NewVerifier(rc, 0, ""), scanner: etcdsnap.NewScanner()}
	if !holdStream(s) {
		ls.goOn()
	}
	s.stream = ls
	start := s.now().UTC()
	a.UploadStart = &start
	go ls.run(bg, s.Clients.Store, key, map[string]string{manifest.MetaRunID: s.Run.RunID, manifest.MetaSnapshotID: a.ID}, rc)

	limit := snapshotTimeout(s)
	timer := time.NewTimer(limit)
	defer timer.Stop()
	until, what := ls.firstByte, "its first bytes"
	if s.Opts.HoldAPIUntilSaved {
		until, what = ls.done, "its end"
	}
	select {
	case <-until:
	case <-ls.done:
		if err := ls.err; err != nil {
			s.stopStream()
			return fmt.Errorf("snapshot stream of etcd member %s/%s: %w", s.Out.HCPNamespace, s.Opts.Member, err)
		}
	case <-timer.C:
		s.stopStream()
		return fmt.Errorf("snapshot stream of etcd member %s/%s: no %s within %s", s.Out.HCPNamespace, s.Opts.Member, what, limit)
	case <-ctx.Done():
		s.stopStream()
		return ctx.Err()
	}
	now := s.now().UTC()
	a.SavedAt = &now
	if s.Opts.HoldAPIUntilSaved {
		log(ctx).Info("snapshot streamed into the bucket", "key", key)
	} else if holdStream(s) {
		log(ctx).Info("snapshot revision fixed; the stream goes on into the bucket once the API is back", "key", key)
	} else {
		log(ctx).Info("snapshot revision fixed; the stream goes on into the bucket", "key", key)
	}
	return nil
}

// holdStream says whether the stream waits after its first bytes until the
// API is back (the end of scale-up-apiservers; upload-snapshot releases it
// too): offline, while the API servers start again. Streaming
// at full speed through the apiserver's port-forward then competes with
// them for the machine (on two cores, the API came back 0.3-0.5 s later
// than with --via exec, whose upload starts in upload-snapshot too); etcd
// keeps the snapshot's read transaction open meanwhile, and flow control
// holds it back beyond the gRPC window. Online there is no downtime to
// spare, and --hold-api-until-saved wants the whole stream first.
func holdStream(s *State) bool {
	return !s.Opts.Online && !s.Opts.HoldAPIUntilSaved
}

// waitMemberReady waits until the member's pod is Running and Ready: a
// snapshot taken again may follow a member that was killed.
func waitMemberReady(ctx context.Context, s *State) error {
	return waitFor(ctx, s, fmt.Sprintf("etcd pod %s/%s to be Running and Ready", s.Out.HCPNamespace, s.Opts.Member), func(ctx context.Context) (bool, error) {
		pod, err := s.Clients.Kube.CoreV1().Pods(s.Out.HCPNamespace).Get(ctx, s.Opts.Member, metav1.GetOptions{})
		if err != nil {
			return false, ignoreNotFound(err)
		}
		return checkMemberPod(pod, s.Opts.Container) == nil, nil
	})
}

// streamUpload waits for the live stream to end in the bucket, verified,
// and records the object and the snapshot's status.
func streamUpload(ctx context.Context, s *State) error {
	a := s.Out.Attempt
	ls := s.stream
	if ls == nil || ls.attempt != a.ID {
		// This process did not open the attempt's stream: the one that did
		// is gone. Its object is whole if the upload completed (a multipart
		// upload completes only once the stream verified).
		if reused, err := reuseStreamed(ctx, s); err != nil || reused {
			return err
		}
		if err := s.Clients.Store.AbortUploads(ctx, a.ObjectKey); err != nil {
			return err
		}
		return retake(ctx, s, fmt.Errorf("the snapshot stream of attempt %s ended with the process that held it", a.ID))
	}
	ls.goOn()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	total := s.Out.EtcdDBSize + sha256.Size // an estimate until the stream ends
	progress := func() {
		done := ls.bytes.Load()
		s.emit(Event{MessageType: "upload_progress", Step: StepUpload, BytesDone: done, BytesTotal: max(total, done)})
	}
	progress()
wait:
	for {
		select {
		case <-ls.done:
			break wait
		case <-ctx.Done():
			s.stopStream()
			return ctx.Err()
		case <-tick.C:
			progress()
		}
	}
	s.stream = nil
	if ls.err != nil {
		if src := ls.sourceError(); src != nil {
			return retake(ctx, s, fmt.Errorf("the snapshot stream of etcd member %s/%s broke after %d bytes: %w", s.Out.HCPNamespace, s.Opts.Member, ls.bytes.Load(), src))
		}
		return fmt.Errorf("upload s3 object %s: %w", a.ObjectKey, ls.err)
	}
	if ls.res.Size != ls.verifier.Size() {
		return fmt.Errorf("uploaded %d bytes of a %d-byte snapshot", ls.res.Size, ls.verifier.Size())
	}
	end := s.now().UTC()
	a.UploadEnd = &end
	a.Bytes, a.EtcdSHA256, a.SHA256 = ls.verifier.Size(), ls.verifier.EtcdSHA256(), ls.verifier.FileSHA256()
	if err := s.Save(ctx); err != nil {
		return err
	}
	secs := end.Sub(*a.UploadStart).Seconds()
	log(ctx).Info("snapshot uploaded", "key", a.ObjectKey, "bytes", a.Bytes, "MBps", fmt.Sprintf("%.1f", float64(a.Bytes)/1e6/max(secs, 1e-3)))
	return streamStatus(ctx, s, ls.scanner)
}

// retake reports the attempt's snapshot lost, so that the engine takes a new
// one, unless the run has taken Options.SnapshotRetries new ones already.
func retake(ctx context.Context, s *State, err error) error {
	if s.Out.Retakes >= s.Opts.SnapshotRetries {
		return fmt.Errorf("%w; %d new snapshots taken already (--snapshot-retries %d): giving up", err, s.Out.Retakes, s.Opts.SnapshotRetries)
	}
	s.Out.Retakes++
	if serr := s.Save(ctx); serr != nil {
		return errors.Join(err, serr)
	}
	return &runbook.LostError{Step: StepSnapshotSave, Err: err}
}

// reuseStreamed reports whether the bucket holds the attempt's object,
// completed by a process that died before recording it; it then reads it
// once to record its size, digests and status.
func reuseStreamed(ctx context.Context, s *State) (bool, error) {
	a := s.Out.Attempt
	info, ok, err := s.Clients.Store.Head(ctx, a.ObjectKey)
	if err != nil || !ok || info.Metadata[manifest.MetaSnapshotID] != a.ID {
		return false, err
	}
	rc, _, err := s.Clients.Store.Get(ctx, a.ObjectKey)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	v := etcdsnap.NewVerifier(rc, info.Size, "")
	sc := etcdsnap.NewScanner()
	if _, err := io.Copy(sc, v); err != nil {
		return false, fmt.Errorf("read s3 object %s: %w", a.ObjectKey, err)
	}
	log(ctx).Info("the bucket already holds this snapshot; not taking it again", "key", a.ObjectKey)
	a.UploadReused = true
	a.Bytes, a.EtcdSHA256, a.SHA256 = v.Size(), v.EtcdSHA256(), v.FileSHA256()
	return true, streamStatus(ctx, s, sc)
}

// streamStatus records the snapshot's status as `etcdutl snapshot status`
// reports it for the object: the scanner saw every page go by and reads
// the few it did not keep back from the bucket.
func streamStatus(ctx context.Context, s *State, sc *etcdsnap.Scanner) error {
	a := s.Out.Attempt
	st, err := sc.Status(func(off, n int64) ([]byte, error) {
		return s.Clients.Store.GetRange(ctx, a.ObjectKey, off, n)
	})
	if err != nil {
		return fmt.Errorf("read the status of snapshot %s: %w", a.ObjectKey, err)
	}
	if st.Revision <= 0 || st.TotalSize <= 0 {
		return fmt.Errorf("snapshot %s has no revision or size (revision %d, %d bytes)", a.ObjectKey, st.Revision, st.TotalSize)
	}
	a.Status = &SnapshotStatus{Revision: st.Revision, TotalSize: st.TotalSize, Version: st.Version}
	return nil
}

// cleanupStream is cleanup-pod-file for a streamed snapshot: nothing was
// written in the pod; a stream still running (the run is being undone) is
// stopped, and an unfinished multipart upload aborted.
func cleanupStream(ctx context.Context, s *State) error {
	s.stopStream()
	a := s.Out.Attempt
	if a == nil || a.ObjectKey == "" || a.Uploaded() {
		return nil
	}
	if err := s.Clients.Store.AbortUploads(ctx, a.ObjectKey); err != nil {
		// Not a change to the cluster: the lock need not stay for it.
		log(ctx).Warn("could not abort the unfinished multipart upload of the snapshot; abort it by hand (aws s3api list-multipart-uploads, abort-multipart-upload) or let a lifecycle rule do it",
			"key", a.ObjectKey, "err", err)
	}
	return nil
}
