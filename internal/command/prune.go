package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/dryrun"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/prune"
	"github.com/hcpsnap/hcpsnap/retention"
	"github.com/hcpsnap/hcpsnap/s3"
	"github.com/hcpsnap/hcpsnap/steps"
)

// Flag names of the retention policy, shared by `hcpsnap prune` and
// `hcpsnap backup --prune`.
const (
	FlagPrune             = "prune"
	FlagKeepLast          = retention.RuleLast
	FlagKeepHourly        = retention.RuleHourly
	FlagKeepDaily         = retention.RuleDaily
	FlagKeepWeekly        = retention.RuleWeekly
	FlagKeepMonthly       = retention.RuleMonthly
	FlagKeepWithin        = retention.RuleWithin
	FlagIncludeIncomplete = "include-incomplete"
)

// RetentionOptions are the retention flags, defined once for prune and
// backup --prune.
type RetentionOptions struct {
	Last, Hourly, Daily, Weekly, Monthly int
	Within                               string
	IncludeIncomplete                    bool
}

func (o *RetentionOptions) flags() []cli.Flag {
	count := func(name, what string, dst *int) cli.Flag {
		return &cli.IntFlag{Name: name, Sources: cli.EnvVars(env(name)), Destination: dst,
			Usage: "Keep the newest backup of each of the N most recent " + what + " that have a backup (UTC)."}
	}
	return []cli.Flag{
		&cli.IntFlag{Name: FlagKeepLast, Sources: cli.EnvVars(env(FlagKeepLast)), Destination: &o.Last,
			Usage: "Keep the N newest backups."},
		count(FlagKeepHourly, "hours", &o.Hourly),
		count(FlagKeepDaily, "days", &o.Daily),
		count(FlagKeepWeekly, "ISO weeks", &o.Weekly),
		count(FlagKeepMonthly, "months", &o.Monthly),
		&cli.StringFlag{Name: FlagKeepWithin, Sources: cli.EnvVars(env(FlagKeepWithin)), Destination: &o.Within,
			Usage: "Keep every backup younger than this duration (72h, 14d, 1d12h), measured from the newest backup rather than from now, so that backups that stopped coming are not lost one by one."},
		&cli.BoolFlag{Name: FlagIncludeIncomplete, Sources: cli.EnvVars(env(FlagIncludeIncomplete)), Destination: &o.IncludeIncomplete,
			Usage: "Also remove backup folders without a usable backup (manifest missing or unreadable, snapshot missing or not the manifest's) once they are older than 24 hours and no backup run in progress writes them (read from the HostedClusters' run annotations: needs list on hostedclusters). Without it they are reported and kept."},
	}
}

// set reports whether any rule of the policy was given.
func (o *RetentionOptions) set() bool {
	return o.Last != 0 || o.Hourly != 0 || o.Daily != 0 || o.Weekly != 0 || o.Monthly != 0 || o.Within != "" || o.IncludeIncomplete
}

// policy checks the flags and returns the policy; every error is a usage
// error that names the flag.
func (o *RetentionOptions) policy() (retention.Policy, error) {
	p := retention.Policy{Last: o.Last, Hourly: o.Hourly, Daily: o.Daily, Weekly: o.Weekly, Monthly: o.Monthly}
	if o.Within != "" {
		d, err := retention.ParseDuration(o.Within)
		if err != nil {
			return p, exitcode.New(exitcode.Usage, err)
		}
		p.Within = d
	}
	if err := p.Validate(); err != nil {
		return p, exitcode.New(exitcode.Usage, err)
	}
	return p, nil
}

// PruneOptions are the options of `hcpsnap prune`.
type PruneOptions struct {
	Cluster string
	// Management prunes the management cluster's own backups (pull-node).
	Management bool
	Prefix     string
	KeyPrefix  string
	Keep       RetentionOptions
	DryRun     bool
	S3         S3Options
	Global     *GlobalOptions
	Out        io.Writer

	policy  retention.Policy
	store   prune.Store
	running map[string]string
}

// Validate checks the options without any I/O.
func (o *PruneOptions) Validate() error {
	if o.Cluster != "" {
		if errs := validation.IsDNS1123Label(o.Cluster); len(errs) > 0 {
			return exitcode.Usagef("--%s %q is not a valid Kubernetes name: %s", FlagCluster, o.Cluster, errs[0])
		}
	}
	if o.Cluster != "" && o.Management {
		return exitcode.Usagef("--%s (or %s) and --%s name two series: keep one", FlagCluster, env(FlagCluster), FlagManagement)
	}
	if o.S3.Bucket == "" {
		return exitcode.Usagef("--%s is required (or %s)", FlagBucket, env(FlagBucket))
	}
	if o.Global.Output == OutputMarkdown {
		return exitcode.Usagef("--output markdown is the format of a backup dry run; use text or json")
	}
	p, err := o.Keep.policy()
	if err != nil {
		return err
	}
	o.policy = p
	return o.S3.validate()
}

// Complete opens the bucket; a dry run gets a store that refuses writes.
func (o *PruneOptions) Complete(ctx context.Context) error {
	store, err := o.S3.open(ctx)
	if err != nil {
		return err
	}
	o.store = store
	if o.DryRun {
		o.store = dryrun.Store{Next: store}
	}
	if !o.Keep.IncludeIncomplete {
		return nil
	}
	cfg, err := kube.RESTConfig(o.Global.Kubeconfig, o.Global.Context)
	if err != nil {
		return exitcode.Preconditionf("--%s: %v; the management cluster is read for backup runs in progress, whose folders are incomplete: give access to it, or leave out --%s", FlagIncludeIncomplete, err, FlagIncludeIncomplete)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	o.running, err = runsInProgress(ctx, &kube.HyperShift{Dynamic: dyn}, o.S3.Bucket)
	return err
}

// runsInProgress names the backup folders of bucket that unfinished runs
// write (folder key to run ID), from the run annotations of every
// HostedCluster: such a folder has no manifest yet and must survive
// --include-incomplete however long the run waits for --resume.
func runsInProgress(ctx context.Context, hyper *kube.HyperShift, bucket string) (map[string]string, error) {
	hcs, err := hyper.HostedClusters(ctx, metav1.NamespaceAll, "")
	if err != nil {
		return nil, exitcode.Preconditionf("--%s: list HostedClusters for backup runs in progress: %v; grant list on hostedclusters in every namespace, or leave out --%s", FlagIncludeIncomplete, oneLineError(err), FlagIncludeIncomplete)
	}
	running := map[string]string{}
	for i := range hcs {
		hc := &hcs[i]
		run, err := steps.Holder(hc)
		if err != nil {
			// A garbled annotation names no folder: the folder of the run
			// that wrote it, if any, is kept by the age guard alone.
			log.FromContext(ctx).Warn("unreadable run annotation; its run's folder, if any, is not known", "hostedcluster", hc.Namespace+"/"+hc.Name, "err", oneLineError(err))
			continue
		}
		if run == nil || !run.Active() {
			continue
		}
		if b, folder, ok := steps.RunFolder(run); ok && b == bucket {
			running[folder] = run.RunID
		}
	}
	return running, nil
}

// Run prunes and reports each backup.
func (o *PruneOptions) Run(ctx context.Context) error {
	series := o.Cluster
	if o.Management {
		series = manifest.ManagementSeries
	}
	return runPrune(ctx, o.store, pruneRun{
		opts: prune.Options{Bucket: o.S3.Bucket, Prefix: o.Prefix, KeyPrefix: o.KeyPrefix, Cluster: series,
			Retention: retention.Options{Policy: o.policy, IncludeIncomplete: o.Keep.IncludeIncomplete}, Running: o.running},
		dryRun: o.DryRun, format: o.Global.Output, out: o.Out,
	})
}

// pruneRun is one prune: what it prunes and where it reports.
type pruneRun struct {
	opts   prune.Options
	dryRun bool
	format string
	out    io.Writer
}

// pruneLine is the NDJSON record of one backup.
type pruneLine struct {
	MessageType string    `json:"message_type"`
	Cluster     string    `json:"cluster"`
	Backup      string    `json:"backup"`
	Time        time.Time `json:"time"`
	Action      string    `json:"action"`
	Result      string    `json:"result"`
	Rules       []string  `json:"rules"`
	Error       string    `json:"error,omitempty"`
}

// pruneSummary is the NDJSON record of the whole prune.
type pruneSummary struct {
	MessageType string `json:"message_type"`
	Location    string `json:"location"`
	Policy      string `json:"policy"`
	DryRun      bool   `json:"dryRun,omitempty"`
	Kept        int    `json:"kept"`
	Removed     int    `json:"removed"`
	WouldRemove int    `json:"wouldRemove"`
	Locked      int    `json:"locked"`
	Failed      int    `json:"failed"`
	Ignored     int    `json:"ignored"`
}

// runPrune plans and executes a prune and writes one line per backup: a
// table row, or an NDJSON object with -o json. Locked backups are warned
// about and do not fail the prune (the bucket's lock does its job; they go
// once it ends); any other backup that could not be removed makes the
// result exitcode.Partial.
func runPrune(ctx context.Context, store prune.Store, r pruneRun) error {
	logger := log.FromContext(ctx)
	location := "s3://" + r.opts.Bucket + "/"
	for _, p := range []string{strings.Trim(r.opts.Prefix, "/"), r.opts.Cluster} {
		if p != "" {
			location += p + "/"
		}
	}
	r.opts.Retention.Now = time.Now()
	items, ignored, err := prune.Plan(ctx, store, r.opts)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if exitcode.Of(err) == exitcode.Usage || errors.Is(err, retention.ErrEmpty) {
			return exitcode.New(exitcode.Usage, err)
		}
		return exitcode.New(exitcode.Precondition, fmt.Errorf("prune %s: %w; nothing was removed", location, s3.Explain(err, r.opts.Bucket)))
	}
	for _, ig := range ignored {
		logger.Warn("left alone: not a backup folder", "key", "s3://"+r.opts.Bucket+"/"+checkpoint.OneLine(ig.Key), "reason", ig.Reason)
	}
	sum := pruneSummary{MessageType: "prune_summary", Location: location, Policy: r.opts.Retention.Policy.String(), DryRun: r.dryRun, Ignored: len(ignored)}
	enc := json.NewEncoder(r.out)
	if r.format != OutputJSON {
		verb := "Pruning"
		if r.dryRun {
			verb = "Dry run: nothing is removed. Pruning"
		}
		fmt.Fprintf(r.out, "%s %s with %s\n%-24s %-17s %-13s %s\n", verb, location, sum.Policy, "CLUSTER", "BACKUP", "RESULT", "RULES")
	}
	var writeErr error
	emit := func(oc prune.Outcome) {
		f := oc.Folder
		line := pruneLine{MessageType: "prune", Cluster: f.Cluster, Backup: "s3://" + r.opts.Bucket + "/" + f.Key + "/", Time: f.Time,
			Action: oc.Decision.Action.String(), Result: oc.Result, Rules: oc.Decision.Rules}
		if oc.Err != nil {
			line.Error = oneLineError(oc.Err)
		}
		switch oc.Result {
		case prune.ResultKept:
			sum.Kept++
			// A damaged folder is never kept silently: a scheduled job's
			// log says so on every run, not only its output.
			if f.State == retention.Incomplete && r.opts.Retention.Now.Sub(f.Time) >= retention.DefaultIncompleteGuard {
				logger.Warn("backup folder without a usable backup kept", "backup", line.Backup, "why", strings.Join(line.Rules, "; "))
			}
		case prune.ResultRemoved:
			sum.Removed++
		case prune.ResultWouldRemove:
			sum.WouldRemove++
		case prune.ResultLocked:
			sum.Locked++
			logger.Warn("backup left whole: object lock", "backup", line.Backup, "err", line.Error)
		case prune.ResultFailed:
			sum.Failed++
			logger.Error("backup not removed", "backup", line.Backup, "err", line.Error)
		}
		var err error
		if r.format == OutputJSON {
			err = enc.Encode(line)
		} else {
			why := strings.Join(line.Rules, "; ")
			if line.Error != "" {
				why += ": " + line.Error
			}
			_, err = fmt.Fprintf(r.out, "%-24s %-17s %-13s %s\n", f.Cluster, f.Timestamp, oc.Result, why)
		}
		if writeErr == nil {
			writeErr = err
		}
	}
	runErr := prune.Execute(ctx, store, items, r.opts.Retention.Now, r.dryRun, emit)
	if runErr != nil {
		return runErr
	}
	if r.format == OutputJSON {
		writeErr = errors.Join(writeErr, enc.Encode(sum))
	} else {
		_, err := fmt.Fprintf(r.out, "%d kept, %d removed, %d would be removed, %d locked, %d failed\n", sum.Kept, sum.Removed, sum.WouldRemove, sum.Locked, sum.Failed)
		writeErr = errors.Join(writeErr, err)
	}
	if writeErr != nil {
		return writeErr
	}
	if sum.Failed > 0 {
		return exitcode.New(exitcode.Partial, fmt.Errorf("prune %s: %d of %d backups chosen for removal were not removed (see above); the next prune finishes them", location, sum.Failed, sum.Failed+sum.Removed+sum.Locked))
	}
	return nil
}

func newPruneCommand(stdout io.Writer) *cli.Command {
	o := &PruneOptions{Out: stdout}
	return &cli.Command{
		Name:  "prune",
		Usage: "remove old backups from the bucket by a retention policy",
		Description: `Applies a restic-style retention policy to the backups of one cluster
(--cluster) or, without it, of every cluster under --prefix, each on its own:
a backup kept by any rule stays. Safety rules hold whatever the policy says:
an empty policy is refused; the newest verified backup (manifest readable,
snapshot present and matching) is kept; a folder without a usable backup is
reported and kept unless --include-incomplete, and always while younger than
24 hours (a backup in progress looks like that); object-locked backups are
reported and left whole.

A backup's snapshot, manifest and key bundle go together: prune first writes
a tombstone (<folder>/deleting.json), then deletes the key bundle, the
snapshot and the manifest, then the tombstone. A prune that was interrupted
is finished by the next one, whatever its policy.

Exit code 6 means some chosen backups could not be removed; locked backups
do not count as failures.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: FlagCluster, Sources: cli.EnvVars(env(FlagCluster)), Destination: &o.Cluster,
				Usage: "Name of the backed-up HostedCluster whose backups are pruned. Without it (and without --management), every cluster under --prefix is pruned, each with the policy, the management cluster's own backups (" + manifest.ManagementSeries + ") too."},
			&cli.BoolFlag{Name: FlagManagement, Sources: cli.EnvVars(env(FlagManagement)), Destination: &o.Management,
				Usage: "Prune the management cluster's own etcd backups, which hcpsnap pull-node copied (<prefix>/" + manifest.ManagementSeries + "/): each goes with its static_kuberesources archive."},
			&cli.StringFlag{Name: FlagPrefix, Value: "backups", Sources: cli.EnvVars(env(FlagPrefix)), Destination: &o.Prefix,
				Usage: "Key prefix of the backups, as given to hcpsnap backup."},
			&cli.StringFlag{Name: FlagKeyPrefix, Value: "hcpsnap-keys", Sources: cli.EnvVars(env(FlagKeyPrefix)), Destination: &o.KeyPrefix,
				Usage: "Key prefix of the key bundles, as given to hcpsnap backup; used for folders whose manifest does not name their key bundle."},
			&cli.BoolFlag{Name: FlagDryRun, Sources: cli.EnvVars(env(FlagDryRun)), Destination: &o.DryRun,
				Usage: "Print each backup with keep or remove and the rule that decided; change nothing."},
		}, append(o.Keep.flags(), o.S3.flags(true)...)...),
		Action: action(o, &o.Global),
	}
}
