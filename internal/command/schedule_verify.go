package command

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/logging"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// verifyScheduleExcluded are verify's flags that a scheduled drill does
// not take from the command line, each with the reason.
var verifyScheduleExcluded = map[string]string{
	FlagFrom:       "each run drills the newest backup of --cluster, or of every cluster: one fixed backup would be drilled again and again",
	FlagLatest:     "the newest backup is what every scheduled run drills",
	FlagDrill:      "a scheduled verify is always a drill",
	FlagScratchDir: "the drill's scratch is the pod's emptyDir at " + schedule.ScratchDir + " (sizeLimit " + schedule.ScratchSizeLimit + ")",
	FlagKeyFile:    "a path on this machine means nothing in the pod; the drill reads the key bundle the manifest names",
	FlagS3CABundle: "a path on this machine means nothing in the pod: name a ConfigMap with --" + FlagScheduleS3CAConfigMap,
}

// ScheduleVerifyOptions are the options of `hcpsnap schedule verify`.
type ScheduleVerifyOptions struct {
	scheduledJob
	// verify holds the verify flags passed through.
	verify VerifyOptions
	spec   schedule.VerifySpec
}

func (o *ScheduleVerifyOptions) flags() []cli.Flag {
	return o.scheduledJob.flags(o.verify.flags(), verifyScheduleExcluded, "Options of the scheduled drill (passed to the job's hcpsnap verify --drill)")
}

// Validate checks the options without any I/O: the job's flags, then the
// verify options with verify's own rules, then the whole schedule.
func (o *ScheduleVerifyOptions) Validate() error {
	j := &o.job
	if err := o.validateMode(); err != nil {
		return err
	}
	switch {
	case j.JobNamespace == "":
		return exitcode.Usagef("--%s is required: the namespace of the CronJob, its Jobs and its ServiceAccount (or set %s)", FlagScheduleJobNamespace, env(FlagScheduleJobNamespace))
	}
	if errs := validation.IsDNS1123Label(j.JobNamespace); len(errs) > 0 {
		return exitcode.Usagef("--%s %q is not a namespace name: %s", FlagScheduleJobNamespace, j.JobNamespace, errs[0])
	}
	if c := o.verify.Cluster; c != "" {
		if errs := validation.IsDNS1123Label(c); len(errs) > 0 {
			return exitcode.Usagef("--%s %q is not a valid Kubernetes name: %s", FlagCluster, c, errs[0])
		}
	}
	if j.Name == "" {
		j.Name = schedule.DefaultVerifyName(o.verify.Cluster)
	} else if err := schedule.CheckName(j.Name); err != nil {
		return exitcode.Usagef("--%s %q is not a schedule name: %v; use lowercase letters, digits and '-'", FlagScheduleName, j.Name, err)
	}
	if j.Delete {
		return nil
	}
	if err := o.job.validateJob("drill", "0 4 * * *"); err != nil {
		return err
	}
	// The job's verify checks its options by the same rules.
	v := o.verify
	v.Drill, v.ScratchDir = true, schedule.ScratchDir
	v.Global = &GlobalOptions{LogLevel: "info", LogFormat: logging.FormatJSON, Output: OutputJSON}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("as options of the scheduled drill: %w", err)
	}
	args, err := o.verifyArgs()
	if err != nil {
		return err
	}
	o.spec = schedule.VerifySpec{Spec: o.scheduledJob.spec(nil), Cluster: o.verify.Cluster, VerifyArgs: args}
	if err := o.spec.Validate(); err != nil {
		return exitcode.New(exitcode.Usage, err)
	}
	return nil
}

// verifyArgs are the arguments of the job's `hcpsnap verify --drill`
// after the scratch folder: --cluster when one is named, then every
// pass-through flag that was set (on the command line or through its
// HCPSNAP_ variable), in verify's order; flags left unset get the defaults
// of the image.
func (o *ScheduleVerifyOptions) verifyArgs() ([]string, error) {
	var args []string
	if o.verify.Cluster != "" {
		args = append(args, "--"+FlagCluster+"="+o.verify.Cluster)
	}
	passed, err := o.passedArgs(FlagCluster)
	return append(args, passed...), err
}

// Run prints, applies or deletes.
func (o *ScheduleVerifyOptions) Run(ctx context.Context) error {
	switch o.mode() {
	case FlagScheduleDelete:
		return o.runDelete(ctx)
	case "render":
		objs, err := schedule.RenderVerify(o.spec)
		if err != nil {
			return exitcode.New(exitcode.Usage, err)
		}
		return o.print(objs)
	}
	return o.runApply(ctx)
}

// what says what the schedule drills, for the header and the apply line.
func (o *ScheduleVerifyOptions) what() string {
	of := "every cluster"
	if c := o.spec.Cluster; c != "" {
		of = "cluster " + c
	}
	return fmt.Sprintf("the newest backup of %s under s3://%s/%s/", of, o.verify.S3.Bucket, o.verify.Prefix)
}

func (o *ScheduleVerifyOptions) print(objs *schedule.Objects) error {
	s := o.spec
	header := fmt.Sprintf("# hcpsnap schedule verify %s: drill %s at %q (%s).\n"+
		"# Apply with: kubectl apply --server-side --field-manager=%s -f FILE, or hcpsnap schedule verify ... --apply.\n"+
		"# The drill reads S3 only: no RBAC, no API token. Its scratch is an emptyDir at %s of at most %s (a drill needs about twice the snapshot).\n",
		s.Name, o.what(), s.Cron, s.TimeZone, schedule.FieldManager, schedule.ScratchDir, schedule.ScratchSizeLimit)
	return printObjects(o.Out, o.Global.Output, header, s.Spec, objs)
}

// runApply checks the job's namespace, the Secret and the ConfigMap, then
// server-side dry-runs the objects and, for --apply, applies them. It does not look for the
// cluster: a drill reads backups, which outlive their cluster.
func (o *ScheduleVerifyOptions) runApply(ctx context.Context) error {
	objs, err := schedule.RenderVerify(o.spec)
	if err != nil {
		return exitcode.New(exitcode.Usage, err)
	}
	s := o.spec
	if _, err := o.kube.CoreV1().Namespaces().Get(ctx, s.JobNamespace, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("namespace %s does not exist: create it, or check --%s", s.JobNamespace, FlagScheduleJobNamespace)
		}
		return exitcode.New(exitcode.Precondition, fmt.Errorf("read namespace %s: %w", s.JobNamespace, err))
	}
	if err := checkJobInputs(ctx, o.kube, s.Spec); err != nil {
		return err
	}
	dry := o.job.DryRun == dryRunServer
	if !dry {
		// The API server validates both objects before either is written,
		// so that a CronJob it refuses leaves no ServiceAccount behind.
		if _, err := schedule.Apply(ctx, o.kube, objs, s.JobNamespace, s.Name, true); err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("server-side dry run: %w", err))
		}
	}
	return applyObjects(ctx, o.Out, o.Global.Output, o.kube, objs, s.JobNamespace, s.Name, dry,
		s.Cron, s.TimeZone, o.now(), "drills "+o.what())
}

func newScheduleVerifyCommand(stdout io.Writer) *cli.Command {
	o := &ScheduleVerifyOptions{scheduledJob: scheduledJob{Out: stdout}}
	return o.command(action(o, &o.Global))
}

// command is schedule verify's urfave/cli command running run once the
// flags that are read by name are in o.
func (o *ScheduleVerifyOptions) command(run cli.ActionFunc) *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "run the restore drill (hcpsnap verify --drill) on a schedule: render, apply or delete its CronJob",
		Description: `Renders (or applies with --apply) a CronJob that proves, at every run, that
the newest backup restores, as hcpsnap verify --drill does by hand:

  hcpsnap schedule verify --cluster example --schedule "0 4 * * *" \
    --job-namespace hcpsnap --image registry.example.com/hcpsnap@sha256:... \
    --bucket backups --s3-credentials-secret hcpsnap-s3 --apply

  - a CronJob whose pod runs the image with 'verify --drill' on the newest
    backup of --cluster, or of every cluster under --prefix without it, and
    the verify options given here (--from, --latest, --key-file, --scratch-dir
    and --s3-ca-bundle are not options of a scheduled drill);
  - its ServiceAccount, which mounts no API token. There is no role and no
    binding: the drill reads S3 only.

The drill restores into an emptyDir at ` + schedule.ScratchDir + ` (sizeLimit ` + schedule.ScratchSizeLimit + `: a
drill needs about twice the snapshot) and serves it with an embedded etcd on
127.0.0.1 inside the pod; the root file system stays read-only. A drill that
fails (exit 7: a backup is unusable; 8: its key bundle does not decrypt its
Secrets; 3: no such backup or no space) fails its Job, and hcpsnap schedule
--list shows it Failed next to the backup schedules. --delete removes every
object that carries the schedule's labels.`,
		Flags:        o.flags(),
		Action:       o.action(run),
		OnUsageError: usageError,
	}
}
