package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/management"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/pullnode"
	"github.com/hcpsnap/hcpsnap/s3"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// Flag names of `hcpsnap pull-node`. --prefix, the S3 flags and
// --wait-timeout are backup's.
const (
	FlagNode         = "node"
	FlagTargetDir    = "target-dir"
	FlagAllowTmpfs   = "allow-tmpfs"
	FlagImage        = "image"
	FlagPodNamespace = "pod-namespace"
	FlagPodDeadline  = "pod-deadline"
	// FlagManagement selects the management cluster's own backups in
	// backups and prune.
	FlagManagement = "management"
)

// PullNodeOptions are the options of `hcpsnap pull-node`.
type PullNodeOptions struct {
	Node         string
	TargetDir    string
	AllowTmpfs   bool
	Image        string
	PodNamespace string
	Prefix       string
	PodDeadline  time.Duration
	WaitTimeout  time.Duration
	UndoTimeout  time.Duration
	S3           S3Options
	Global       *GlobalOptions
	Out          io.Writer

	tmpfsWarning string
	kube         kubernetes.Interface
	exec         pullnode.Executor
	store        pullnode.Store
}

func (o *PullNodeOptions) flags() []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: FlagNode, Sources: cli.EnvVars(env(FlagNode)), Destination: &o.Node,
			Usage: "Name of the master whose snapshot folder is copied (required): the --host of hcpsnap schedule management."},
		&cli.StringFlag{Name: FlagTargetDir, Value: management.DefaultTargetDir, Sources: cli.EnvVars(env(FlagTargetDir)), Destination: &o.TargetDir,
			Usage: "Folder on the node where the snapshot script leaves its snapshots, as given to hcpsnap schedule management."},
		&cli.BoolFlag{Name: FlagAllowTmpfs, Sources: cli.EnvVars(env(FlagAllowTmpfs)), Destination: &o.AllowTmpfs,
			Usage: "Allow a --target-dir under /tmp, a tmpfs that a reboot empties."},
		&cli.StringFlag{Name: FlagImage, Sources: cli.EnvVars(env(FlagImage)), Destination: &o.Image,
			Usage: "hcpsnap's own image by digest (REPOSITORY@sha256:...), which the pod on the node runs (required; make image prints the digest)."},
		&cli.StringFlag{Name: FlagPodNamespace, Sources: cli.EnvVars(env(FlagPodNamespace)), Destination: &o.PodNamespace,
			Usage: "Namespace of the short-lived pod (default: the kubeconfig context's namespace, or the service account's in a pod). It must allow hostPath volumes and root (on OpenShift, the SCC hostmount-anyuid)."},
		&cli.StringFlag{Name: FlagPrefix, Value: "backups", Sources: cli.EnvVars(env(FlagPrefix)), Destination: &o.Prefix,
			Usage: "Key prefix of the backups: each snapshot goes to <prefix>/" + manifest.ManagementSeries + "/<UTC timestamp>/."},
		&cli.DurationFlag{Name: FlagPodDeadline, Value: time.Hour, Sources: cli.EnvVars(env(FlagPodDeadline)), Destination: &o.PodDeadline,
			Usage: "The pod's activeDeadlineSeconds: a pod that a killed run leaves behind ends by itself after this. It must cover the copy of every snapshot."},
		&cli.DurationFlag{Name: FlagWaitTimeout, Value: 5 * time.Minute, Sources: cli.EnvVars(env(FlagWaitTimeout)), Destination: &o.WaitTimeout,
			Usage: "Longest wait for the pod to run."},
		&cli.DurationFlag{Name: FlagUndoTimeout, Value: time.Minute, Sources: cli.EnvVars(env(FlagUndoTimeout)), Destination: &o.UndoTimeout,
			Usage: "Longest wait for the pod's deletion at the end, also after a failure or Ctrl-C."},
	}
	return append(f, o.S3.flags(true)...)
}

// Validate checks the options without any I/O.
func (o *PullNodeOptions) Validate() error {
	if o.Node == "" {
		return exitcode.Usagef("--%s is required: name the master that takes the snapshots (or set %s)", FlagNode, env(FlagNode))
	}
	if errs := validation.IsDNS1123Subdomain(o.Node); len(errs) > 0 {
		return exitcode.Usagef("--%s %q is not a valid node name: %s", FlagNode, checkpoint.OneLine(o.Node), errs[0])
	}
	warning, err := management.CheckTargetDir(o.TargetDir, o.AllowTmpfs)
	if err != nil {
		return exitcode.Usagef("--%s %v", FlagTargetDir, err)
	}
	o.tmpfsWarning = warning
	if o.Image == "" {
		return exitcode.Usagef("--%s is required: hcpsnap's image by digest, REPOSITORY@sha256:... (or set %s)", FlagImage, env(FlagImage))
	}
	if err := schedule.CheckImage(o.Image); err != nil {
		return exitcode.Usagef("--%s: %v", FlagImage, err)
	}
	if o.PodNamespace != "" {
		if errs := validation.IsDNS1123Label(o.PodNamespace); len(errs) > 0 {
			return exitcode.Usagef("--%s %q is not a valid namespace name: %s", FlagPodNamespace, checkpoint.OneLine(o.PodNamespace), errs[0])
		}
	}
	switch {
	case o.PodDeadline < time.Minute:
		return exitcode.Usagef("--%s %s is too short: give at least 1m, enough to copy every snapshot", FlagPodDeadline, o.PodDeadline)
	case o.WaitTimeout <= 0:
		return exitcode.Usagef("--%s %s must be a positive duration", FlagWaitTimeout, o.WaitTimeout)
	case o.UndoTimeout <= 0:
		return exitcode.Usagef("--%s %s must be a positive duration", FlagUndoTimeout, o.UndoTimeout)
	case o.Global.Output == OutputMarkdown:
		return exitcode.Usagef("--output markdown is the format of a backup dry run; use text or json")
	}
	if o.S3.Bucket == "" {
		return exitcode.Usagef("--%s is required: name the S3 bucket for the snapshots (or set %s)", FlagBucket, env(FlagBucket))
	}
	return o.S3.validate()
}

// Complete builds the clients, resolves the pod's namespace and opens the
// bucket.
func (o *PullNodeOptions) Complete(ctx context.Context) error {
	cfg, err := kube.RESTConfig(o.Global.Kubeconfig, o.Global.Context)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	if o.PodNamespace == "" {
		if o.PodNamespace, err = kube.Namespace(o.Global.Kubeconfig, o.Global.Context); err != nil {
			return exitcode.New(exitcode.Precondition, err)
		}
	}
	if o.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	o.exec = &kube.Executor{Config: cfg, Client: o.kube}
	store, err := o.S3.open(ctx)
	if err != nil {
		return err
	}
	limitMemory(o.S3.PartSizeMiB<<20, o.S3.Concurrency)
	o.store = store
	return nil
}

// Run copies the node's snapshots and prints one line per entry of its
// target folder.
func (o *PullNodeOptions) Run(ctx context.Context) error {
	logger := log.FromContext(ctx)
	if o.tmpfsWarning != "" {
		logger.Warn(o.tmpfsWarning)
	}
	enc := json.NewEncoder(o.Out)
	var writeErr error
	p := &pullnode.Puller{Kube: o.kube, Exec: o.exec, Store: o.store, Opts: pullnode.Options{
		Node: o.Node, TargetDir: o.TargetDir, Image: o.Image, PodNamespace: o.PodNamespace,
		Bucket: o.S3.Bucket, Prefix: o.Prefix, PodDeadline: o.PodDeadline, WaitTimeout: o.WaitTimeout, CleanupTimeout: o.UndoTimeout,
	}, Emit: func(r pullnode.Result) {
		var err error
		if o.Global.Output == OutputJSON {
			err = enc.Encode(r)
		} else {
			err = writePullLine(o.Out, r)
		}
		if writeErr == nil {
			writeErr = err
		}
	}}
	err := p.Run(ctx)
	switch {
	case err == nil:
		return writeErr
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return err // 130: the upload in progress was aborted, the pod deleted
	case errors.Is(err, pullnode.ErrNodeNotFound):
		return exitcode.Preconditionf("node %s not found: check --%s (kubectl get nodes -l node-role.kubernetes.io/master)", o.Node, FlagNode)
	case errors.Is(err, pullnode.ErrCopy) && p.Uploaded() > 0:
		return exitcode.New(exitcode.Partial, fmt.Errorf("%d snapshot(s) uploaded, then: %w", p.Uploaded(), s3.Explain(err, o.S3.Bucket)))
	case errors.Is(err, pullnode.ErrCopy):
		return exitcode.New(exitcode.Restored, fmt.Errorf("%w; nothing partial is left in the bucket, and the pod is deleted", s3.Explain(err, o.S3.Bucket)))
	}
	return exitcode.New(exitcode.Precondition, s3.Explain(err, o.S3.Bucket))
}

// writePullLine writes the text line of one entry of the node's folder.
func writePullLine(w io.Writer, r pullnode.Result) error {
	var err error
	switch r.Result {
	case pullnode.ResultUploaded:
		_, err = fmt.Fprintf(w, "%s  uploaded        %s (revision %d, %.1f MiB)\n", r.Folder, r.Manifest, r.Revision, float64(r.Bytes)/(1<<20))
	case pullnode.ResultAlreadyStored:
		_, err = fmt.Fprintf(w, "%s  already stored  %s\n", r.Folder, r.Manifest)
	case pullnode.ResultSkipped:
		_, err = fmt.Fprintf(w, "%s  skipped         %s\n", r.Folder, r.Reason)
	default:
		_, err = fmt.Fprintf(w, "%s  failed          %s\n", r.Folder, r.Reason)
	}
	return err
}

func newPullNodeCommand(stdout io.Writer) *cli.Command {
	o := &PullNodeOptions{Out: stdout}
	return &cli.Command{
		Name:  "pull-node",
		Usage: "copy the management cluster's etcd snapshots off a master into S3, without ssh",
		Description: `Copies the snapshots that hcpsnap schedule management's script leaves on a
master (--target-dir/<UTC timestamp>/: snapshot_<time>.db and
static_kuberesources_<time>.tar.gz, as OpenShift's cluster-backup.sh writes
them) into the bucket, each as <prefix>/` + manifest.ManagementSeries + `/<timestamp>/ with
snapshot.db, static_kuberesources.tar.gz and, last, manifest.json.

It starts a short-lived pod on --node running hcpsnap's image (--image), with
the folder mounted read-only and nothing else privileged (root, because the
files are root's), reads the files through pods/exec, and streams each into a
multipart upload; the snapshot is checked against etcd's SHA-256 on the way,
as hcpsnap backup checks its own. Folders in progress (.partial) are never
read. A folder whose manifest the bucket holds is not copied again, so a
second run uploads nothing. The pod is deleted at the end, also after a
failure or Ctrl-C; its --pod-deadline ends it if hcpsnap is killed.

The pod's namespace must allow hostPath volumes and root: on OpenShift, grant
its service account the SCC hostmount-anyuid (deploy/rbac.yaml,
hcpsnap-pull-node).

hcpsnap backups --management lists these backups and hcpsnap prune prunes
them; they are restored with OpenShift's cluster-restore.sh on a recovery
master, not with hcpsnap restore.`,
		Flags:  o.flags(),
		Action: action(o, &o.Global),
	}
}
