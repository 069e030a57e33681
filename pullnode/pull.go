package pullnode

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/charmbracelet/log"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/internal/etcdsnap"
	"github.com/hcpsnap/hcpsnap/internal/version"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/s3"
)

// Options say which node's folder goes to which bucket, and how the pod is
// run. The command line checks them (Validate there); Pull trusts them.
type Options struct {
	// Node is the master whose target folder is read.
	Node string
	// TargetDir is the folder on the node (management.CheckTargetDir).
	TargetDir string
	// Image is hcpsnap's image by digest; the pod runs it.
	Image string
	// PodNamespace is where the pod runs.
	PodNamespace string
	// Bucket and Prefix place the backups: <prefix>/_management/<timestamp>/.
	Bucket string
	Prefix string
	// PodDeadline is the pod's activeDeadlineSeconds: a pod that a killed
	// run leaves behind ends by itself after it.
	PodDeadline time.Duration
	// WaitTimeout bounds the wait for the pod to run.
	WaitTimeout time.Duration
	// CleanupTimeout bounds the deletion of the pod at the end, which runs
	// after a failure or Ctrl-C too.
	CleanupTimeout time.Duration
}

// Store is what Pull needs of the bucket.
type Store interface {
	Head(ctx context.Context, key string) (s3.ObjectInfo, bool, error)
	GetRange(ctx context.Context, key string, off, n int64) ([]byte, error)
	Put(ctx context.Context, key string, data []byte, opts s3.PutOptions) error
	Upload(ctx context.Context, key string, r io.Reader, opts s3.UploadOptions) (s3.UploadResult, error)
	AbortUploads(ctx context.Context, key string) error
}

var _ Store = (*s3.Store)(nil)

// Results of one folder of the node.
const (
	ResultUploaded      = "uploaded"
	ResultAlreadyStored = "already-stored"
	ResultSkipped       = "skipped"
	ResultFailed        = "failed"
)

// Result is what became of one entry of the node's target folder.
type Result struct {
	MessageType string `json:"message_type"`
	Node        string `json:"node"`
	// Folder is the entry's name on the node.
	Folder   string `json:"folder"`
	Result   string `json:"result"`
	Reason   string `json:"reason,omitempty"`
	Manifest string `json:"manifest,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	Bytes    int64  `json:"bytes,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
}

// ErrNodeNotFound is a --node that names no Node.
var ErrNodeNotFound = errors.New("node not found")

// ErrCopy marks a failure while copying a folder, after the pod served
// the listing: the bucket holds every folder reported uploaded before it,
// and no partial object (the multipart upload was aborted).
var ErrCopy = errors.New("copy failed")

// Puller copies the complete snapshot folders of a node into the bucket.
type Puller struct {
	Kube  kubernetes.Interface
	Exec  Executor
	Store Store
	Opts  Options
	// Emit receives one Result per entry of the target folder, in order.
	Emit func(Result)

	// now and poll are replaced by tests.
	now  func() time.Time
	poll time.Duration
	// rangeSize overrides readRange (tests).
	rangeSize int64

	runID    string
	uploaded int
}

// Uploaded returns how many folders this run uploaded.
func (p *Puller) Uploaded() int { return p.uploaded }

// Run checks the node, starts the pod, copies every complete folder the
// bucket does not hold yet, and deletes the pod whatever happened.
func (p *Puller) Run(ctx context.Context) (err error) {
	if p.now == nil {
		p.now = time.Now
	}
	if p.poll == 0 {
		p.poll = 500 * time.Millisecond
	}
	logger := log.FromContext(ctx)
	o := p.Opts
	if _, err := p.Kube.CoreV1().Nodes().Get(ctx, o.Node, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: %s", ErrNodeNotFound, o.Node)
		}
		return fmt.Errorf("read node %s: %w", o.Node, err)
	}
	if err := cleanStale(ctx, p.Kube, o, warnFunc(ctx)); err != nil {
		return err
	}
	pod, err := p.Kube.CoreV1().Pods(o.PodNamespace).Create(ctx, PodSpec(o), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create the pod that reads %s on node %s in namespace %s: %w", o.TargetDir, o.Node, o.PodNamespace, err)
	}
	logger.Info("pod started", "pod", o.PodNamespace+"/"+pod.Name, "node", o.Node, "folder", o.TargetDir)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.CleanupTimeout)
		defer cancel()
		derr := deletePod(cctx, p.Kube, o.PodNamespace, pod.Name)
		if derr == nil {
			derr = waitGone(cctx, p.Kube, o.PodNamespace, pod.Name, p.poll)
		}
		if derr != nil {
			logger.Warn("could not delete the pod; its deadline ends it, delete it by hand", "pod", o.PodNamespace+"/"+pod.Name, "err", derr)
			err = errors.Join(err, derr)
			return
		}
		logger.Info("pod deleted", "pod", o.PodNamespace+"/"+pod.Name)
	}()

	wctx, cancel := context.WithTimeout(ctx, o.WaitTimeout)
	err = waitRunning(wctx, p.Kube, o.PodNamespace, pod.Name, p.poll)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	listing, err := p.list(ctx, pod.Name)
	if err != nil {
		return err
	}
	p.runID = newRunID(p.now())
	for _, s := range listing.Skipped {
		p.emit(Result{Folder: s.Name, Result: ResultSkipped, Reason: s.Reason})
	}
	for _, f := range listing.Folders {
		res, err := p.pullFolder(ctx, pod.Name, f)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p.emit(Result{Folder: f.Name, Result: ResultFailed, Reason: oneLine(err.Error())})
			return fmt.Errorf("%w: folder %s: %w", ErrCopy, f.Name, err)
		}
		p.emit(res)
	}
	return nil
}

func (p *Puller) emit(r Result) {
	r.MessageType, r.Node = "pull", p.Opts.Node
	if p.Emit != nil {
		p.Emit(r)
	}
}

// maxListing bounds the listing read from the pod.
const maxListing = 4 << 20

// list asks hcpsnap in the pod for the target folder's listing and checks
// it as the untrusted input it is.
func (p *Puller) list(ctx context.Context, pod string) (*Listing, error) {
	var out, stderr bytes.Buffer
	cmd := []string{Binary, NodeFilesCommand, "list", MountPath}
	if err := p.Exec.Exec(ctx, p.Opts.PodNamespace, pod, Container, cmd, nil, &limitedWriter{w: &out, n: maxListing}, &stderr); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("list %s on node %s: %w (%s)", p.Opts.TargetDir, p.Opts.Node, err, oneLine(stderr.String()))
	}
	var l Listing
	if err := json.Unmarshal(out.Bytes(), &l); err != nil {
		return nil, fmt.Errorf("list %s on node %s: the pod's answer is not a listing: %w", p.Opts.TargetDir, p.Opts.Node, err)
	}
	for _, f := range l.Folders {
		if !validFolder(f.Name) {
			return nil, fmt.Errorf("list %s on node %s: %q is not a complete folder's name", p.Opts.TargetDir, p.Opts.Node, oneLine(f.Name))
		}
		for _, fl := range f.Files {
			if fl.Size < 0 {
				return nil, fmt.Errorf("list %s on node %s: file %s/%s has a negative size", p.Opts.TargetDir, p.Opts.Node, f.Name, oneLine(fl.Name))
			}
		}
	}
	for i := range l.Skipped {
		l.Skipped[i].Name = oneLine(l.Skipped[i].Name)
		l.Skipped[i].Reason = oneLine(l.Skipped[i].Reason)
	}
	return &l, nil
}

// validFolder is a complete folder's name whose time reads back the same.
func validFolder(name string) bool {
	t, err := time.Parse(manifest.TimestampFormat, name)
	return err == nil && t.Format(manifest.TimestampFormat) == name
}

// Keys returns the keys of the management backup of a folder.
func Keys(prefix, folder string) (snapshot, static, manifestKey string) {
	base := strings.TrimPrefix(path.Join(strings.Trim(prefix, "/"), manifest.ManagementSeries, folder), "/")
	return base + "/" + manifest.SnapshotObject, base + "/" + manifest.StaticResourcesObject, base + "/" + manifest.ManifestObject
}

// pullFolder copies one complete folder unless the bucket holds its
// manifest: the snapshot, the static resources archive, then the manifest.
func (p *Puller) pullFolder(ctx context.Context, pod string, f Folder) (Result, error) {
	o := p.Opts
	snapKey, staticKey, manifestKey := Keys(o.Prefix, f.Name)
	res := Result{Folder: f.Name, Manifest: "s3://" + o.Bucket + "/" + manifestKey}
	if _, ok, err := p.Store.Head(ctx, manifestKey); err != nil {
		return res, fmt.Errorf("read %s: %w", res.Manifest, err)
	} else if ok {
		res.Result = ResultAlreadyStored
		return res, nil
	}
	snap, static, reason := pick(f)
	if reason != "" {
		res.Result, res.Reason, res.Manifest = ResultSkipped, reason, ""
		return res, nil
	}
	taken, _ := time.Parse(manifest.TimestampFormat, f.Name)
	log.FromContext(ctx).Info("copying", "folder", f.Name, "snapshot", snap.Name, "bytes", snap.Size)

	// The snapshot, checked against etcd's SHA-256 as it passes, and read
	// by the scanner for what etcdutl snapshot status reports.
	var verifier *etcdsnap.Verifier
	scanner := etcdsnap.NewScanner()
	err := p.upload(ctx, pod, f.Name, snap, snapKey, func(src io.Reader) (io.Reader, checker) {
		verifier = etcdsnap.NewVerifier(src, snap.Size, "")
		return io.TeeReader(verifier, scanner), verifier
	})
	if err != nil {
		return res, err
	}
	st, err := scanner.Status(func(off, n int64) ([]byte, error) { return p.Store.GetRange(ctx, snapKey, off, n) })
	if err != nil {
		return res, fmt.Errorf("read the status of snapshot %s: %w", snapKey, err)
	}
	if st.Revision <= 0 || st.TotalSize <= 0 {
		return res, fmt.Errorf("snapshot %s has no revision or size (revision %d, %d bytes)", snapKey, st.Revision, st.TotalSize)
	}
	var staticSum *archiveCheck
	err = p.upload(ctx, pod, f.Name, static, staticKey, func(src io.Reader) (io.Reader, checker) {
		staticSum = newArchiveCheck(src, static.Size)
		return staticSum, staticSum
	})
	if staticSum != nil {
		staticSum.Close()
	}
	if err != nil {
		return res, err
	}
	uploaded := p.now().UTC()
	m := manifest.Manifest{
		SchemaVersion: manifest.SchemaVersion,
		RunID:         p.runID,
		Cluster:       manifest.ManagementSeries,
		Online:        true,
		Source:        manifest.SourceManagement,
		Node:          o.Node,
		Etcd: manifest.Etcd{Member: o.Node, Revision: st.Revision, TotalSize: st.TotalSize,
			SHA256: verifier.EtcdSHA256(), StorageVersion: st.Version},
		Snapshot:        manifest.Object{Bucket: o.Bucket, Key: snapKey, Size: verifier.Size(), SHA256: verifier.FileSHA256()},
		StaticResources: &manifest.Object{Bucket: o.Bucket, Key: staticKey, Size: staticSum.Size(), SHA256: staticSum.FileSHA256()},
		Original:        &manifest.OriginalFiles{Folder: f.Name, Snapshot: snap.Name, StaticResources: static.Name},
		KeyBundle:       manifest.KeyBundle{Secrets: []string{}},
		Times:           manifest.Times{Started: taken, SnapshotSaved: &taken, Uploaded: &uploaded, Finished: uploaded},
		HCPSnapVersion:  version.Version,
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return res, err
	}
	if err := p.Store.Put(ctx, manifestKey, append(data, '\n'), s3.PutOptions{ContentType: "application/json"}); err != nil {
		return res, fmt.Errorf("write %s: %w", res.Manifest, err)
	}
	p.uploaded++
	res.Result, res.Revision, res.Bytes, res.SHA256 = ResultUploaded, st.Revision, verifier.Size(), verifier.FileSHA256()
	return res, nil
}

// checker is what the upload of one file checks as it passes: etcd's
// snapshot verifier, or the archive check.
type checker interface {
	io.Reader
	Size() int64
	FileSHA256() string
}

// upload streams one file of the folder into key through the checks that
// wrap gives it (etcdsnap's Verifier and Scanner for the snapshot,
// archiveCheck for the archive); a check that fails fails the stream, and
// so aborts the multipart upload.
func (p *Puller) upload(ctx context.Context, pod, folder string, f File, key string, wrap func(io.Reader) (io.Reader, checker)) error {
	// An upload that a killed run left unfinished would stay billed.
	if err := p.Store.AbortUploads(ctx, key); err != nil {
		return fmt.Errorf("abort earlier uploads of %s: %w", key, err)
	}
	src := newFileReader(ctx, p.Exec, p.Opts.PodNamespace, pod, MountPath+"/"+folder+"/"+f.Name, f.Size, warnFunc(ctx))
	if p.rangeSize > 0 {
		src.rangeSize = p.rangeSize
	}
	defer src.Close()
	r, c := wrap(src)
	res, err := p.Store.Upload(ctx, key, r, s3.UploadOptions{
		Metadata: map[string]string{manifest.MetaRunID: p.runID, manifest.MetaSnapshotID: p.runID + "-" + folder},
	})
	if err != nil {
		p.abortLeftovers(ctx, key)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("upload %s as s3://%s/%s: %w", f.Name, p.Opts.Bucket, key, err)
	}
	if res.Size != f.Size || c.Size() != f.Size || c.FileSHA256() == "" {
		return fmt.Errorf("uploaded %d bytes of %s, which has %d", res.Size, f.Name, f.Size)
	}
	return nil
}

// abortLeftovers makes sure that a failed or interrupted upload leaves no
// multipart upload behind. Upload aborts its own, but a part whose request
// was cancelled on the client may still be written by the server after
// that abort, and bring the upload back (seen with MinIO after Ctrl-C); so
// the uploads of key are aborted again, a few times, under a context of
// their own.
func (p *Puller) abortLeftovers(ctx context.Context, key string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.Opts.CleanupTimeout)
	defer cancel()
	var err error
	for i := range 3 {
		if i > 0 {
			select {
			case <-actx.Done():
			case <-time.After(p.abortPause()):
			}
		}
		if err = p.Store.AbortUploads(actx, key); err != nil {
			break
		}
	}
	if err != nil {
		log.FromContext(ctx).Warn("could not abort the unfinished multipart upload; abort it by hand (aws s3api list-multipart-uploads, abort-multipart-upload) or let a lifecycle rule do it", "key", key, "err", err)
	}
}

// abortPause is the wait between the aborts of abortLeftovers.
func (p *Puller) abortPause() time.Duration {
	if p.poll < 500*time.Millisecond {
		return p.poll
	}
	return 500 * time.Millisecond
}

// warnFunc logs a warning through the context's logger.
func warnFunc(ctx context.Context) func(string, ...any) {
	return func(msg string, kv ...any) { log.FromContext(ctx).Warn(msg, kv...) }
}

// newRunID names one run of pull-node: the UTC time and 4 random bytes,
// like a backup's run ID.
func newRunID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// limitedWriter fails once more than n bytes were written.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if int64(len(b)) > l.n {
		return 0, fmt.Errorf("more than %d bytes", maxListing)
	}
	l.n -= int64(len(b))
	return l.w.Write(b)
}
