package command

import (
	"context"
	"io"
	"slices"
	"time"

	"github.com/urfave/cli/v3"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// scheduledJob is what the schedule subcommands that run another hcpsnap
// command in their CronJob (pull-node, verify) share: the job flags, the
// names of the command's flags passed through to the job, how the command
// line is read, and the client.
type scheduledJob struct {
	// job holds the job flags (scheduleJobFlags).
	job         ScheduleOptions
	passThrough []string
	Global      *GlobalOptions
	Out         io.Writer

	isSet func(string) bool
	value func(string) any
	now   func() time.Time

	kube kubernetes.Interface
}

// flags are the job flags, then the flags of the job's command that are
// not excluded, under category; it records the latter as passed through.
func (o *scheduledJob) flags(command []cli.Flag, excluded map[string]string, category string) []cli.Flag {
	var f []cli.Flag
	for _, fl := range o.job.flags() {
		if slices.Contains(scheduleJobFlags, fl.Names()[0]) {
			f = append(f, fl)
		}
	}
	o.passThrough = nil
	for _, fl := range command {
		name := fl.Names()[0]
		if _, ok := excluded[name]; ok {
			continue
		}
		o.passThrough = append(o.passThrough, name)
		if c, ok := fl.(cli.CategorizableFlag); ok {
			c.SetCategory(category)
		}
		f = append(f, fl)
	}
	return f
}

// mode is what the command was asked to do.
func (o *scheduledJob) mode() string {
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

// validateMode refuses a --dry-run that is no mode, actions that
// contradict each other, and an output format a schedule has not.
func (o *scheduledJob) validateMode() error {
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
	}
	return nil
}

// passedArgs are the pass-through flags that were set (on the command
// line or through their HCPSNAP_ variables), in the command's order, as
// the job's arguments, leaving out skip (which the caller writes itself);
// flags left unset get the defaults of the image.
func (o *scheduledJob) passedArgs(skip string) ([]string, error) {
	if o.isSet == nil {
		return nil, nil
	}
	var args []string
	for _, name := range o.passThrough {
		if name == skip || !o.isSet(name) {
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

// spec is the schedule's job from the job flags, with rules for its
// ServiceAccount (none: no RBAC).
func (o *scheduledJob) spec(rules []rbacv1.PolicyRule) schedule.Spec {
	j := &o.job
	return schedule.Spec{
		Name: j.Name, JobNamespace: j.JobNamespace,
		Cron: j.Cron, TimeZone: j.TimeZone, StartingDeadline: j.StartingDeadline, ActiveDeadline: j.ActiveDeadline,
		SuccessfulJobsHistory: int32(j.SuccessfulHistory), FailedJobsHistory: int32(j.FailedHistory), Suspend: j.Suspend,
		Image:       j.Image,
		Credentials: schedule.Credentials{Secret: j.CredentialsSecret, RoleARN: j.RoleARN},
		S3Endpoint:  j.S3Endpoint, Region: j.Region, S3CAConfigMap: j.S3CAConfigMap,
		Rules: rules,
	}
}

// Complete builds the client, unless the command only prints.
func (o *scheduledJob) Complete(context.Context) error {
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

// runDelete deletes the schedule's objects, through schedule's options.
func (o *scheduledJob) runDelete(ctx context.Context) error {
	o.job.Global, o.job.Out, o.job.kube = o.Global, o.Out, o.kube
	return o.job.runDelete(ctx)
}

// action reads the flags that are read by name into o, then runs run.
func (o *scheduledJob) action(run cli.ActionFunc) cli.ActionFunc {
	return func(ctx context.Context, cmd *cli.Command) error {
		o.isSet = cmd.IsSet
		o.value = cmd.Value
		return run(ctx, cmd)
	}
}
