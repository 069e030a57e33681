package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/dryrun"
	"github.com/hcpsnap/hcpsnap/internal/etcdclient"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/prune"
	"github.com/hcpsnap/hcpsnap/retention"
	"github.com/hcpsnap/hcpsnap/runbook"
	"github.com/hcpsnap/hcpsnap/s3"
	"github.com/hcpsnap/hcpsnap/steps"
)

// Flag names of `hcpsnap backup` and their environment variables.
const (
	FlagCluster      = "cluster"
	FlagNamespace    = "namespace"
	FlagBucket       = "bucket"
	FlagPrefix       = "prefix"
	FlagKeyPrefix    = "key-prefix"
	FlagMember       = "member"
	FlagContainer    = "container"
	FlagDeployments  = "deployments"
	FlagPauseTimeout = "pause-timeout"
	FlagWaitTimeout  = "wait-timeout"
	FlagUndoTimeout  = "undo-timeout"
	FlagOnline       = "online"
	// FlagWithoutShards backs up a HostedCluster with etcd shards by its
	// default member only.
	FlagWithoutShards = "without-shards"
	FlagHoldAPI       = "hold-api-until-saved"
	FlagVia           = "via"
	FlagRetries       = "snapshot-retries"
	FlagSkipSteps     = "skip-steps"
	FlagDryRun        = "dry-run"
	FlagResume        = "resume"
	FlagAbandon       = "abandon"
	FlagYes           = "yes"
	FlagStateDir      = "state-dir"
	FlagKeyOut        = "key-out"
	FlagSSE           = "sse"
	FlagSSEKMSKeyID   = "sse-kms-key-id"
	FlagEtcdctl       = "etcdctl"
	FlagEtcdutl       = "etcdutl"
	FlagEtcdEndpoint  = "etcd-endpoint"
	FlagEtcdCACert    = "etcd-cacert"
	FlagEtcdCert      = "etcd-cert"
	FlagEtcdKey       = "etcd-key"
	FlagSnapshotDir   = "snapshot-dir"
	FlagS3CABundle    = "s3-ca-bundle"
	FlagS3Insecure    = "s3-insecure-skip-verify"
	FlagS3PathStyle   = "s3-path-style"
	FlagPartSize      = "part-size-mib"
	FlagConcurrency   = "concurrency"
)

// env returns the HCPSNAP_ variable of a flag: --key-prefix → HCPSNAP_KEY_PREFIX.
func env(flag string) string {
	return "HCPSNAP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// S3Options are the S3 settings shared by backup and restore.
type S3Options struct {
	Bucket      string
	CABundle    string
	Insecure    bool
	PathStyle   bool
	PartSizeMiB int64
	Concurrency int
}

func (o *S3Options) flags(withBucket bool) []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: FlagS3CABundle, Sources: cli.EnvVars(env(FlagS3CABundle)), Destination: &o.CABundle,
			Usage: "PEM file of the CA that signed the S3 endpoint's certificate, for S3-compatible stores with a private CA."},
		&cli.BoolFlag{Name: FlagS3Insecure, Sources: cli.EnvVars(env(FlagS3Insecure)), Destination: &o.Insecure,
			Usage: "Do not verify the S3 endpoint's TLS certificate. Insecure: for tests only; a warning is logged."},
		&cli.BoolFlag{Name: FlagS3PathStyle, Sources: cli.EnvVars(env(FlagS3PathStyle)), Destination: &o.PathStyle,
			Usage: "Address the bucket in the URL path instead of the host name, as most S3-compatible stores need."},
		&cli.Int64Flag{Name: FlagPartSize, Value: s3.DefaultPartSize >> 20, Sources: cli.EnvVars(env(FlagPartSize)), Destination: &o.PartSizeMiB,
			Usage: "Size in MiB of each part of the multipart upload (5 or more). Memory use is about part size × (concurrency + 1)."},
		&cli.IntFlag{Name: FlagConcurrency, Value: s3.DefaultConcurrency, Sources: cli.EnvVars(env(FlagConcurrency)), Destination: &o.Concurrency,
			Usage: "Number of parts uploaded at once."},
	}
	if withBucket {
		f = append([]cli.Flag{&cli.StringFlag{Name: FlagBucket, Sources: cli.EnvVars(env(FlagBucket)), Destination: &o.Bucket,
			Usage: "S3 bucket that receives the backups (required). The AWS SDK's configuration chain supplies credentials, region and endpoint (AWS_ENDPOINT_URL_S3)."}}, f...)
	}
	return f
}

func (o *S3Options) validate() error {
	if err := validateBucket(o.Bucket); err != nil {
		return err
	}
	if o.PartSizeMiB < 5 || o.PartSizeMiB > 5*1024 {
		return exitcode.Usagef("--%s %d is out of range: S3 parts are 5 to 5120 MiB", FlagPartSize, o.PartSizeMiB)
	}
	if o.Concurrency < 1 || o.Concurrency > 64 {
		return exitcode.Usagef("--%s %d is out of range: use 1 to 64", FlagConcurrency, o.Concurrency)
	}
	if o.CABundle != "" && o.Insecure {
		return exitcode.Usagef("--%s and --%s contradict each other: keep one", FlagS3CABundle, FlagS3Insecure)
	}
	return nil
}

func (o *S3Options) open(ctx context.Context) (*s3.Store, error) {
	if o.Insecure {
		log.FromContext(ctx).Warn("TLS verification of the S3 endpoint is off (--" + FlagS3Insecure + "): anyone on the path can read and change the backup")
	}
	store, err := s3.Open(ctx, s3.Config{Bucket: o.Bucket, CABundle: o.CABundle, InsecureSkipVerify: o.Insecure,
		PathStyle: o.PathStyle, PartSize: o.PartSizeMiB << 20, Concurrency: o.Concurrency})
	if err != nil {
		return nil, exitcode.New(exitcode.Precondition, err)
	}
	return store, nil
}

// memoryHeadroom is what hcpsnap needs beside the upload's part buffers:
// the exec stream's frames, the SDK's requests, the clients' caches (about
// 7 MiB live at 1 GiB), and room for garbage between collections.
const memoryHeadroom = 20 << 20

// DefaultVia is how a backup takes its snapshot unless --via says otherwise.
const DefaultVia = steps.ViaExec

// limitMemory sets a soft limit on the Go heap of part buffers plus
// headroom, unless GOMEMLIMIT chose one. The buffers live for the whole
// upload while the exec stream makes garbage fast; without a limit the
// collector lets the heap grow to twice the buffers before it runs.
func limitMemory(partSize int64, concurrency int) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(partSize*int64(concurrency+1) + memoryHeadroom)
}

// BackupOptions are the options of `hcpsnap backup`.
type BackupOptions struct {
	steps.Options
	S3          S3Options
	DryRun      bool
	Resume      bool
	Abandon     bool
	Yes         bool
	StateDir    string
	UndoTimeout time.Duration
	// Prune and Keep prune the cluster's backups after a backup that
	// completed; never after one that failed.
	Prune bool
	Keep  RetentionOptions

	// Fleet selects many HostedClusters instead of --cluster (fleet.go).
	Fleet FleetOptions

	Global *GlobalOptions
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer

	// report, when set, receives the run's events and summary: a fleet
	// gives each cluster's run its own (fleet.go).
	report *reporter

	// isSet reports whether the user set a flag (on the command line or in
	// its environment variable); nil means none was set.
	isSet func(flag string) bool
	// terminal reports whether In is a terminal; nil means isTerminal.
	terminal func(io.Reader) bool

	// Filled by Complete.
	restConfig *rest.Config
	hyper      *kube.HyperShift
	kube       kubernetes.Interface
	store      steps.Store
	pruneStore prune.Store
	policy     retention.Policy
}

func (o *BackupOptions) flags() []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: FlagCluster, Sources: cli.EnvVars(env(FlagCluster)), Destination: &o.Cluster,
			Usage: "Name of the HostedCluster to back up (required, unless --selector or --all-namespaces selects a fleet)."},
		&cli.StringFlag{Name: FlagNamespace, Value: "clusters", Sources: cli.EnvVars(env(FlagNamespace)), Destination: &o.Namespace,
			Usage: "Namespace of the HostedCluster; its control plane runs in <namespace>-<cluster>."},
		&cli.StringFlag{Name: FlagPrefix, Value: "backups", Sources: cli.EnvVars(env(FlagPrefix)), Destination: &o.Prefix,
			Usage: "Key prefix of the snapshot and manifest: <prefix>/<cluster>/<UTC timestamp>/snapshot.db."},
		&cli.StringFlag{Name: FlagKeyPrefix, Value: "hcpsnap-keys", Sources: cli.EnvVars(env(FlagKeyPrefix)), Destination: &o.KeyPrefix,
			Usage: "Key prefix of the key bundle (AES key and signing Secrets), apart from the snapshots so that access to it can be restricted."},
		&cli.StringFlag{Name: FlagMember, Value: "etcd-0", Sources: cli.EnvVars(env(FlagMember)), Destination: &o.Member,
			Usage: "etcd pod whose member is snapshotted; it must be Running and Ready."},
		&cli.StringFlag{Name: FlagContainer, Value: "etcd", Sources: cli.EnvVars(env(FlagContainer)), Destination: &o.Container,
			Usage: "Container of the etcd pod in which etcdctl runs."},
		&cli.StringSliceFlag{Name: FlagDeployments, Value: steps.DefaultDeployments, Sources: cli.EnvVars(env(FlagDeployments)), Destination: &o.Deployments,
			Usage: "API Deployments scaled to 0 while the snapshot is taken (comma-separated)."},
		&cli.DurationFlag{Name: FlagPauseTimeout, Value: 30 * time.Minute, Sources: cli.EnvVars(env(FlagPauseTimeout)), Destination: &o.PauseTimeout,
			Usage: "Reconciliation is paused until now plus this; if hcpsnap is lost, HyperShift resumes by itself at that time."},
		&cli.DurationFlag{Name: FlagWaitTimeout, Value: 5 * time.Minute, Sources: cli.EnvVars(env(FlagWaitTimeout)), Destination: &o.WaitTimeout,
			Usage: "Longest wait for the cluster to show a change (pause seen, pods gone, Deployments available)."},
		&cli.DurationFlag{Name: FlagUndoTimeout, Value: 10 * time.Minute, Sources: cli.EnvVars(env(FlagUndoTimeout)), Destination: &o.UndoTimeout,
			Usage: "Longest time each counterpart of the undo after a failure or Ctrl-C may take (scale-up, resume, then the pod clean-up, each with its own deadline)."},
		&cli.BoolFlag{Name: FlagOnline, Sources: cli.EnvVars(env(FlagOnline)), Destination: &o.Online,
			Usage: "Take the snapshot without pausing or scaling down: no API downtime (etcd snapshots are consistent)."},
		&cli.BoolFlag{Name: FlagWithoutShards, Sources: cli.EnvVars(env(FlagWithoutShards)), Destination: &o.WithoutShards,
			Usage: "Back up a HostedCluster that has etcd shards (spec.etcd.managed.shards) by its default member only. hcpsnap does not back up shards yet: the backup then lacks every object of the resources routed to them, and its manifest names those shards (missingShards). Without this flag such a cluster is refused."},
		&cli.BoolFlag{Name: FlagHoldAPI, Sources: cli.EnvVars(env(FlagHoldAPI)), Destination: &o.HoldAPIUntilSaved,
			Usage: "Keep the API down until the snapshot file is complete, as the manual runbook does. By default it comes back as soon as etcd has fixed the snapshot's revision (its first byte is written), so the downtime does not grow with the size of etcd."},
		&cli.StringFlag{Name: FlagVia, Value: DefaultVia, Sources: cli.EnvVars(env(FlagVia)), Destination: &o.Via,
			Usage: "How the snapshot leaves etcd: stream (etcd's snapshot API through the apiserver's port-forward, straight into the upload: nothing written in the pod, no program of its image run, any database size) or exec (the runbook's etcdctl snapshot save in the pod, a file on etcd's volume that needs room for a copy of the database)."},
		&cli.IntFlag{Name: FlagRetries, Value: 2, Sources: cli.EnvVars(env(FlagRetries)), Destination: &o.SnapshotRetries,
			Usage: "With --via stream, how many times a broken stream is taken again from the start (a new snapshot; offline, the API goes down again)."},
		&cli.StringSliceFlag{Name: FlagSkipSteps, Sources: cli.EnvVars(env(FlagSkipSteps)), Destination: &o.SkipSteps,
			Usage: "Steps to leave out (comma-separated): " + strings.Join(stepNames(), ", ") + "."},
		&cli.BoolFlag{Name: FlagDryRun, Sources: cli.EnvVars(env(FlagDryRun)), Destination: &o.DryRun,
			Usage: "Read the cluster, change nothing anywhere, and print the runbook with real values and equivalent commands (-o markdown for a review document)."},
		&cli.BoolFlag{Name: FlagResume, Sources: cli.EnvVars(env(FlagResume)), Destination: &o.Resume,
			Usage: "Continue the unfinished run of this cluster from its first unfinished step, taking its state from the HostedCluster (any machine) or the local run file. Only --cluster and --namespace are needed: the run goes on with the options it recorded, and a flag that contradicts one of them is refused."},
		&cli.BoolFlag{Name: FlagAbandon, Destination: &o.Abandon,
			Usage: "Release the cluster from an unfinished run without finishing it: print what the run changed and what it left undone, then remove its lock (after asking, unless --yes). With --dry-run, only print. The run's changes are not undone: fix them by hand with the commands printed."},
		&cli.BoolFlag{Name: FlagYes, Destination: &o.Yes,
			Usage: "Release the lock with --abandon without asking; needed when stdin is not a terminal."},
		&cli.StringFlag{Name: FlagStateDir, Sources: cli.EnvVars("HCPSNAP_STATE_DIR"), Destination: &o.StateDir,
			Usage: "Folder of run files (default $XDG_STATE_HOME/hcpsnap/runs, else ~/.local/state/hcpsnap/runs when the home folder is writable, else hcpsnap/runs in $TMPDIR or /tmp)."},
		&cli.StringFlag{Name: FlagKeyOut, Sources: cli.EnvVars(env(FlagKeyOut)), Destination: &o.KeyOut,
			Usage: "Write the key bundle to this local file (mode 0600) instead of the bucket. The file is not encrypted: it holds the AES key in clear, so keep it as you keep that key."},
		&cli.StringFlag{Name: FlagSSE, Sources: cli.EnvVars(env(FlagSSE)), Destination: &o.SSE,
			Usage: "Server-side encryption of the key bundle: AES256 or aws:kms (default: the bucket's default encryption)."},
		&cli.StringFlag{Name: FlagSSEKMSKeyID, Sources: cli.EnvVars(env(FlagSSEKMSKeyID)), Destination: &o.SSEKMSKeyID,
			Usage: "KMS key for --sse aws:kms."},
		&cli.StringFlag{Name: FlagEtcdctl, Value: steps.DefaultEtcdctl, Sources: cli.EnvVars(env(FlagEtcdctl)), Destination: &o.Etcd.Etcdctl,
			Usage: "Path of etcdctl inside the etcd container."},
		&cli.StringFlag{Name: FlagEtcdutl, Value: steps.DefaultEtcdutl, Sources: cli.EnvVars(env(FlagEtcdutl)), Destination: &o.Etcd.Etcdutl,
			Usage: "Path of etcdutl inside the etcd container. It reads the snapshot's status (etcd 3.6's etcdctl cannot); without it, preflight falls back to etcdctl if it is older than 3.6, and refuses otherwise."},
		&cli.StringFlag{Name: FlagEtcdEndpoint, Value: steps.DefaultEndpoint, Sources: cli.EnvVars(env(FlagEtcdEndpoint)), Destination: &o.Etcd.Endpoint,
			Usage: "etcd endpoint as seen from inside the pod."},
		&cli.StringFlag{Name: FlagEtcdCACert, Sources: cli.EnvVars(env(FlagEtcdCACert)), Destination: &o.Etcd.CACert,
			Usage: "CA file inside the pod (default: " + steps.CACertPath + " when the pod mounts it, as since OCP 4.12, else " + steps.LegacyCACertPath + ")."},
		&cli.StringFlag{Name: FlagEtcdCert, Value: steps.DefaultClientCert, Sources: cli.EnvVars(env(FlagEtcdCert)), Destination: &o.Etcd.Cert,
			Usage: "Client certificate file inside the pod."},
		&cli.StringFlag{Name: FlagEtcdKey, Value: steps.DefaultClientKey, Sources: cli.EnvVars(env(FlagEtcdKey)), Destination: &o.Etcd.Key,
			Usage: "Client key file inside the pod."},
		&cli.StringFlag{Name: FlagSnapshotDir, Value: steps.DefaultSnapshotDir, Sources: cli.EnvVars(env(FlagSnapshotDir)), Destination: &o.Etcd.SnapshotDir,
			Usage: "Folder inside the pod where the snapshot file is written; it must have room for the database."},
	}
	f = append(f, &cli.BoolFlag{Name: FlagPrune, Sources: cli.EnvVars(env(FlagPrune)), Destination: &o.Prune,
		Usage: "After a backup that completed (manifest written), prune this cluster's backups by the --keep-* policy, as hcpsnap prune does. Never after a failed backup. A prune that fails leaves the backup standing and ends with exit code 6."})
	f = append(f, o.Keep.flags()...)
	f = append(f, o.Fleet.flags()...)
	return append(f, o.S3.flags(true)...)
}

func stepNames() []string {
	e := steps.Engine{Steps: steps.Backup()}
	return e.Names()
}

// Validate checks the options without any I/O. With --resume or --abandon
// only --cluster and --namespace are needed; the run's recorded options are
// checked by the same rules once it is read (validateOptions).
func (o *BackupOptions) Validate() error {
	if o.Fleet.selected() {
		if err := o.validateFleet(); err != nil {
			return err
		}
	} else if o.Cluster == "" {
		return exitcode.Usagef("--%s is required: name the HostedCluster to back up (or set %s), or select many with --%s or --%s", FlagCluster, env(FlagCluster), FlagSelector, FlagAllNamespaces)
	}
	switch {
	case o.DryRun && o.Resume:
		return exitcode.Usagef("--%s and --%s cannot be combined: a dry run changes nothing, so there is nothing to resume", FlagDryRun, FlagResume)
	case o.Resume && o.Abandon:
		return exitcode.Usagef("--%s and --%s exclude each other: --%s finishes the run, --%s releases it unfinished", FlagResume, FlagAbandon, FlagResume, FlagAbandon)
	case o.Yes && !o.Abandon:
		return exitcode.Usagef("--%s only confirms --%s", FlagYes, FlagAbandon)
	case o.Global.Output == OutputMarkdown && (!o.DryRun || o.Abandon):
		return exitcode.Usagef("--output markdown is the format of a dry run's runbook: add --%s, or use text or json", FlagDryRun)
	}
	o.Options.Bucket = o.S3.Bucket
	o.Deployments = trimmed(o.Deployments)
	o.SkipSteps = trimmed(o.SkipSteps)
	if o.Bucket == "" && !o.DryRun && !o.Resume && !o.Abandon {
		return exitcode.Usagef("--%s is required: name the S3 bucket for the backup (or set %s)", FlagBucket, env(FlagBucket))
	}
	if err := o.S3.validate(); err != nil {
		return err
	}
	if err := validateOptions(o.withValidName()); err != nil {
		return err
	}
	if o.UndoTimeout <= 0 {
		return exitcode.Usagef("--%s %s must be a positive duration", FlagUndoTimeout, o.UndoTimeout)
	}
	return o.validatePrune()
}

// validatePrune checks --prune and its policy: the --keep-* flags only make
// sense with it, and it needs a policy.
func (o *BackupOptions) validatePrune() error {
	switch {
	case !o.Prune && o.Keep.set():
		return exitcode.Usagef("the --keep-* and --%s flags apply to --%s: add --%s, or run hcpsnap prune", FlagIncludeIncomplete, FlagPrune, FlagPrune)
	case o.Prune && o.Abandon:
		return exitcode.Usagef("--%s and --%s exclude each other: an abandoned run wrote no backup to prune after", FlagPrune, FlagAbandon)
	case !o.Prune:
		return nil
	}
	p, err := o.Keep.policy()
	if err != nil {
		return err
	}
	o.policy = p
	return nil
}

// Complete builds the clients. A dry run gets clients that can only read.
func (o *BackupOptions) Complete(ctx context.Context) error {
	if err := o.checkConfirmable(); err != nil {
		return err
	}
	if o.KeyOut != "" {
		abs, err := filepath.Abs(o.KeyOut)
		if err != nil {
			return exitcode.Usagef("--%s %q: %v", FlagKeyOut, o.KeyOut, err)
		}
		o.KeyOut = abs
	}
	cfg, err := kube.RESTConfig(o.Global.Kubeconfig, o.Global.Context)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	if o.DryRun {
		cfg = dryrun.ReadOnly(cfg)
	}
	o.restConfig = cfg
	if o.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	o.hyper = &kube.HyperShift{Dynamic: dyn}
	if o.StateDir == "" {
		if o.StateDir, err = checkpoint.Dir(); err != nil {
			return exitcode.New(exitcode.Precondition, err)
		}
	}
	if o.Bucket != "" && !o.Resume && !o.Abandon {
		return o.openStore(ctx)
	}
	return nil
}

// checkConfirmable refuses an --abandon that would wait for an answer no
// one can give: stdin is not a terminal and --yes is not set.
func (o *BackupOptions) checkConfirmable() error {
	if o.Abandon && !o.DryRun && !o.Yes && !o.isTerminal() {
		return exitcode.Usagef("--%s asks before it releases the lock, and stdin is not a terminal: add --%s to release it without asking, or --%s to only print what the run left", FlagAbandon, FlagYes, FlagDryRun)
	}
	return nil
}

// openStore opens the bucket of o.S3 (for --resume, the run's).
func (o *BackupOptions) openStore(ctx context.Context) error {
	store, err := o.S3.open(ctx)
	if err != nil {
		return err
	}
	// Only the backup holds part buffers; restore and backups do not.
	limitMemory(o.S3.PartSizeMiB<<20, o.S3.Concurrency)
	o.store = store
	o.pruneStore = store
	if o.DryRun {
		o.store = dryrun.Store{Next: store}
	}
	return nil
}

// Run performs the backup, or prints its runbook for a dry run.
func (o *BackupOptions) Run(ctx context.Context) error {
	if o.Fleet.selected() {
		return o.runFleet(ctx)
	}
	engine := &steps.Engine{Steps: steps.Backup(), UndoTimeout: o.UndoTimeout, Retakes: o.SnapshotRetries}
	cluster := checkpoint.Cluster{Namespace: o.Namespace, Name: o.Cluster}
	host, _ := os.Hostname()
	if o.DryRun && !o.Abandon {
		if o.Prune {
			log.FromContext(ctx).Info("a dry run of backup does not prune: run hcpsnap prune --dry-run with the same --keep-* flags to see what would go")
		}
		state := o.newState(&steps.Outputs{})
		state.Run = checkpoint.New("backup", cluster, host, engine.Names(), time.Now())
		return o.printRunbook(ctx, engine, state)
	}

	hc, err := o.hyper.GetHostedCluster(ctx, o.Namespace, o.Cluster)
	if apierrors.IsNotFound(err) {
		return exitcode.Preconditionf("HostedCluster %s not found: check --cluster and --namespace (kubectl get hostedclusters -A)", cluster)
	}
	if err != nil {
		return exitcode.New(exitcode.Precondition, fmt.Errorf("read HostedCluster %s: %w", cluster, err))
	}
	cluster.UID = string(hc.UID)
	if o.Abandon {
		return o.abandon(ctx, hc, cluster)
	}
	held, err := steps.Holder(hc)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	var state *steps.State
	if o.Resume {
		rec, err := o.loadRun(ctx, held, cluster)
		if err != nil {
			return err
		}
		o.Options = rec.opts
		o.S3.Bucket = rec.opts.Bucket
		engine.Retakes = rec.opts.SnapshotRetries
		if err := o.openStore(ctx); err != nil {
			return err
		}
		state = o.newState(rec.out)
		state.Run = rec.run
		// The checkpoint written from here on records what this machine
		// resolved (a local key file only from here, never from the
		// annotation).
		if state.Run.Options, err = json.Marshal(rec.opts); err != nil {
			return err
		}
	} else {
		if held != nil && !held.Finished {
			return steps.CheckNotHeld(hc, "")
		}
		state = o.newState(&steps.Outputs{})
		state.Run = checkpoint.New("backup", cluster, host, engine.Names(), time.Now())
		if state.Run.Options, err = json.Marshal(o.Options); err != nil {
			return err
		}
	}
	saver := &steps.ClusterSaver{Dir: o.StateDir, Client: o.hyper}
	state.Saver = saver
	out := o.report
	if out == nil {
		out = newReporter(o.Global.Output, o.Out, o.ErrOut)
	}
	state.Events = out.event
	out.event(steps.Event{MessageType: "run_started", Message: fmt.Sprintf("backup of %s, run %s", cluster, state.Run.RunID)})

	runErr := engine.Execute(ctx, state)
	// Release the lock unless a change could not be undone: then it stays,
	// so that nothing else runs before --resume finishes the undo.
	if exitcode.Of(runErr) != exitcode.ManualAction {
		relCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := saver.Release(relCtx, state.Run); err != nil {
			log.FromContext(ctx).Warn("could not remove the run annotation", "annotation", steps.RunAnnotation, "err", err)
		}
	}
	if runErr != nil {
		out.event(steps.Event{MessageType: "run_failed", Error: runErr.Error()})
		return runErr
	}
	if err := out.summary(state); err != nil {
		return err
	}
	return o.pruneAfterBackup(ctx, state)
}

// pruneAfterBackup prunes the cluster's backups after a backup that
// completed. Any failure of the prune ends with exitcode.Partial: the backup
// stands, and a scheduled job must still see that its bucket is not pruned.
func (o *BackupOptions) pruneAfterBackup(ctx context.Context, state *steps.State) error {
	if !o.Prune {
		return nil
	}
	var running map[string]string
	var err error
	if o.Keep.IncludeIncomplete {
		running, err = runsInProgress(ctx, o.hyper, o.Bucket)
	}
	if err == nil {
		err = runPrune(ctx, o.pruneStore, pruneRun{
			opts: prune.Options{Bucket: o.Bucket, Prefix: o.Prefix, KeyPrefix: o.KeyPrefix, Cluster: o.Cluster,
				Retention: retention.Options{Policy: o.policy, IncludeIncomplete: o.Keep.IncludeIncomplete}, Running: running},
			format: o.Global.Output, out: o.Out,
		})
	}
	if err == nil {
		return nil
	}
	log.FromContext(ctx).Warn("the backup is complete, but the prune after it failed", "manifest", "s3://"+o.Bucket+"/"+state.Out.ManifestKey, "err", oneLineError(err))
	return exitcode.New(exitcode.Partial, fmt.Errorf("backup complete (s3://%s/%s), but --%s failed: %w", o.Bucket, state.Out.ManifestKey, FlagPrune, err))
}

// newState is the state every step receives, with the options and clients
// of o.
func (o *BackupOptions) newState(out *steps.Outputs) *steps.State {
	return &steps.State{
		Opts: o.Options,
		Clients: steps.Clients{
			Kube:       o.kube,
			HyperShift: o.hyper,
			Exec:       &kube.Executor{Config: o.restConfig, Client: o.kube},
			Etcd: &etcdclient.Members{Kube: o.kube,
				Dial: (&kube.PortForwarder{Config: o.restConfig, Client: o.kube, Protocol: os.Getenv("HCPSNAP_PORTFORWARD_PROTOCOL")}).Dial},
			Store: o.store,
		},
		Out: out,
	}
}

// loadRun finds the run to resume (the cluster's annotation, written by any
// machine, or this machine's newest unfinished run file), checks it as the
// untrusted input it is, and refuses flags that contradict it.
func (o *BackupOptions) loadRun(ctx context.Context, held *checkpoint.Run, cluster checkpoint.Cluster) (*recordedRun, error) {
	run, local, source, err := findRun(o.StateDir, held, cluster)
	if err != nil {
		return nil, err
	}
	here := o.Options
	if o.isSet == nil || !o.isSet(FlagKeyOut) {
		here.KeyOut = ""
	}
	rec, err := checkRecorded(run, local, cluster, here)
	if err != nil {
		return nil, err
	}
	if err := checkFlagsAgree(o.Options, rec.opts, o.isSet, run.RunID); err != nil {
		return nil, err
	}
	log.FromContext(ctx).Info("resuming run", "run", run.RunID, "from", firstUnfinished(run), "host", checkpoint.OneLine(run.Host),
		"source", source, "bucket", rec.opts.Bucket, "prefix", rec.opts.Prefix, "online", rec.opts.Online)
	return rec, nil
}

func firstUnfinished(run *checkpoint.Run) string {
	for _, s := range run.Steps {
		if s.Status != checkpoint.Done && s.Status != checkpoint.Skipped {
			return s.Name
		}
	}
	return "(none)"
}

func (o *BackupOptions) printRunbook(ctx context.Context, engine *steps.Engine, state *steps.State) error {
	entries, err := runbook.Build(ctx, engine.Steps, state)
	if err != nil {
		var w *dryrun.ErrWrite
		if errors.As(err, &w) {
			return fmt.Errorf("dry run: a plan tried to change something, which is a bug: %w", err)
		}
		if exitcode.Of(err) == exitcode.Internal && apierrors.IsNotFound(errors.Unwrap(err)) {
			return exitcode.New(exitcode.Precondition, err)
		}
		return err
	}
	mode := "offline (API down until etcd has fixed the snapshot's revision)"
	if o.HoldAPIUntilSaved {
		mode = "offline (API down until the snapshot file is complete)"
	}
	if o.Online {
		mode = "online (no API downtime)"
	}
	h := runbook.Header{Title: "hcpsnap backup runbook", Cluster: o.Namespace + "/" + o.Cluster, Mode: mode, RunID: state.Run.RunID}
	switch o.Global.Output {
	case OutputJSON:
		return runbook.WriteJSON(o.Out, h, entries)
	case OutputMarkdown:
		return runbook.WriteMarkdown(o.Out, h, entries)
	default:
		return runbook.WriteText(o.Out, h, entries)
	}
}

func newBackupCommand(stdin io.Reader, stdout, stderr io.Writer) *cli.Command {
	o := &BackupOptions{In: stdin, Out: stdout, ErrOut: stderr}
	run := action(o, &o.Global)
	return &cli.Command{
		Name:  "backup",
		Usage: "back up a HostedCluster's etcd to S3",
		Description: `Performs HyperShift's etcd backup runbook as one command. The steps, in order:

` + stepHelp() + `
Every change is recorded (run file and HostedCluster annotation) before it is
made, and undone after a failure, SIGINT or SIGTERM. scale-up-apiservers and
resume-reconciliation run as soon as the snapshot file exists, so the API
downtime does not include the upload. A run that was killed is finished with
--resume, from any machine: it goes on with the options it recorded. A run
that cannot be finished (exit 5 after a manual fix) releases the cluster with
--abandon, which prints what the run changed and left undone first.

` + fleetHelp,
		Flags: o.flags(),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			o.isSet = cmd.IsSet
			return run(ctx, cmd)
		},
	}
}

func stepHelp() string {
	var b strings.Builder
	for i, st := range steps.Backup() {
		fmt.Fprintf(&b, "  %2d. %-22s %s\n", i+1, st.Name, st.Summary)
	}
	return b.String()
}
