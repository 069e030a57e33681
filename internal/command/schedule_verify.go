package command

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/urfave/cli/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
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
	// job holds the job flags (scheduleJobFlags); verify the verify flags
	// passed through.
	job         ScheduleOptions
	verify      VerifyOptions
	passThrough []string
	Global      *GlobalOptions
	Out         io.Writer

	isSet func(string) bool
	value func(string) any
	now   func() time.Time

	spec schedule.VerifySpec
	kube kubernetes.Interface
}

func (o *ScheduleVerifyOptions) flags() []cli.Flag {
	var f []cli.Flag
	for _, fl := range o.job.flags() {
		if slices.Contains(scheduleJobFlags, fl.Names()[0]) {
			f = append(f, fl)
		}
	}
	o.passThrough = nil
	for _, fl := range o.verify.flags() {
		name := fl.Names()[0]
		if _, excluded := verifyScheduleExcluded[name]; excluded {
			continue
		}
		o.passThrough = append(o.passThrough, name)
		if c, ok := fl.(cli.CategorizableFlag); ok {
			c.SetCategory("Options of the scheduled drill (passed to the job's hcpsnap verify --drill)")
		}
		f = append(f, fl)
	}
	return f
}

// mode is what the command was asked to do.
func (o *ScheduleVerifyOptions) mode() string {
	switch {
	case o.job.Delete:
		return FlagScheduleDelete
	case o.job.DryRun == dryRunServer:
		return "dry-run=server"
	case o.job.Apply:
		return FlagApply
	}
	return "render"
}

// Validate checks the options without any I/O: the job's flags, then the
// verify options with verify's own rules, then the whole schedule.
func (o *ScheduleVerifyOptions) Validate() error {
	j := &o.job
	switch j.DryRun {
	case "", dryRunNone, dryRunClient, dryRunServer:
	default:
		return exitcode.Usagef("--%s=%s is not a mode: use --%s=server to validate against the API server, or leave it out to print", FlagDryRun, j.DryRun, FlagDryRun)
	}
	switch {
	case j.Delete && (j.Apply || j.DryRun == dryRunServer):
		return exitcode.Usagef("--%s and --%s/--%s=server are different actions: choose one", FlagScheduleDelete, FlagApply, FlagDryRun)
	case j.Apply && j.DryRun == dryRunClient:
		return exitcode.Usagef("--%s and --%s=client contradict each other: leave out --%s to print, or use --%s=server", FlagApply, FlagDryRun, FlagApply, FlagDryRun)
	case o.Global.Output == OutputMarkdown:
		return exitcode.Usagef("--output markdown is the format of a backup dry run; schedule writes YAML or text (text) or JSON (json)")
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
	o.spec = schedule.VerifySpec{
		Spec: schedule.Spec{
			Name: j.Name, JobNamespace: j.JobNamespace,
			Cron: j.Cron, TimeZone: j.TimeZone, StartingDeadline: j.StartingDeadline, ActiveDeadline: j.ActiveDeadline,
			SuccessfulJobsHistory: int32(j.SuccessfulHistory), FailedJobsHistory: int32(j.FailedHistory), Suspend: j.Suspend,
			Image:       j.Image,
			Credentials: schedule.Credentials{Secret: j.CredentialsSecret, RoleARN: j.RoleARN},
			S3Endpoint:  j.S3Endpoint, Region: j.Region, S3CAConfigMap: j.S3CAConfigMap,
		},
		Cluster: o.verify.Cluster, VerifyArgs: args,
	}
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
	if o.isSet == nil {
		return args, nil
	}
	for _, name := range o.passThrough {
		if name == FlagCluster || !o.isSet(name) {
			continue
		}
		arg, err := formatFlag(name, o.value(name))
		if err != nil {
			return nil, err
		}
		args = append(args, arg)
	}
	return args, nil
}

// Complete builds the client, unless the command only prints.
func (o *ScheduleVerifyOptions) Complete(context.Context) error {
	if o.now == nil {
		o.now = time.Now
	}
	if o.mode() == "render" || o.kube != nil {
		return nil
	}
	cfg, err := kube.RESTConfig(o.Global.Kubeconfig, o.Global.Context)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	o.kube, err = kubernetes.NewForConfig(cfg)
	return err
}

// Run prints, applies or deletes.
func (o *ScheduleVerifyOptions) Run(ctx context.Context) error {
	// Delete works on schedule's options.
	o.job.Global, o.job.Out, o.job.kube = o.Global, o.Out, o.kube
	switch o.mode() {
	case FlagScheduleDelete:
		return o.job.runDelete(ctx)
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
	o := &ScheduleVerifyOptions{Out: stdout}
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
		Flags: o.flags(),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			o.isSet = cmd.IsSet
			o.value = cmd.Value
			return run(ctx, cmd)
		},
		OnUsageError: usageError,
	}
}
