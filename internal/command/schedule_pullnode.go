package command

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hcpsnap/hcpsnap/deploy"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/logging"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// scheduleJobFlags are the flags of `hcpsnap schedule` that shape any
// scheduled job, whatever it runs; `schedule pull-node` takes them too.
var scheduleJobFlags = []string{
	FlagScheduleCron, FlagScheduleTimeZone, FlagScheduleStartingDeadline, FlagScheduleActiveDeadline,
	FlagScheduleSuccessfulHistory, FlagScheduleFailedHistory, FlagScheduleSuspend, FlagScheduleImage, FlagScheduleName,
	FlagScheduleJobNamespace, FlagScheduleCredentialsSecret, FlagScheduleRoleARN, FlagScheduleS3Endpoint, FlagScheduleRegion,
	FlagScheduleS3CAConfigMap, FlagApply, FlagDryRun, FlagScheduleDelete,
}

// pullNodeScheduleExcluded are pull-node's flags that a scheduled job does
// not take from the command line, each with the reason.
var pullNodeScheduleExcluded = map[string]string{
	FlagImage:        "the job's pod and pull-node's pod run the same image, --image",
	FlagPodNamespace: "pull-node's pod runs in the job's namespace, where the job's permissions are bound",
	FlagS3CABundle:   "a path on this machine means nothing in the pod: name a ConfigMap with --" + FlagScheduleS3CAConfigMap,
}

// SchedulePullNodeOptions are the options of `hcpsnap schedule pull-node`.
type SchedulePullNodeOptions struct {
	scheduledJob
	// pull holds the pull-node flags passed through.
	pull PullNodeOptions
	spec schedule.PullNodeSpec
}

func (o *SchedulePullNodeOptions) flags() []cli.Flag {
	return o.scheduledJob.flags(o.pull.flags(), pullNodeScheduleExcluded, "Options of the scheduled pull-node (passed to the job's hcpsnap pull-node)")
}

// Validate checks the options without any I/O: the job's flags, then the
// pull-node options with pull-node's own rules, then the whole schedule.
func (o *SchedulePullNodeOptions) Validate() error {
	j := &o.job
	if err := o.validateMode(); err != nil {
		return err
	}
	switch {
	case o.pull.Node == "":
		return exitcode.Usagef("--%s is required: name the master whose snapshots the job copies (or set %s)", FlagNode, env(FlagNode))
	case j.JobNamespace == "":
		return exitcode.Usagef("--%s is required: the namespace of the CronJob, where pull-node's pod runs too; it must allow hostPath volumes", FlagScheduleJobNamespace)
	}
	if errs := validation.IsDNS1123Subdomain(o.pull.Node); len(errs) > 0 {
		return exitcode.Usagef("--%s %q is not a valid node name: %s", FlagNode, o.pull.Node, errs[0])
	}
	if errs := validation.IsDNS1123Label(j.JobNamespace); len(errs) > 0 {
		return exitcode.Usagef("--%s %q is not a namespace name: %s", FlagScheduleJobNamespace, j.JobNamespace, errs[0])
	}
	if j.Name == "" {
		j.Name = schedule.DefaultPullNodeName(o.pull.Node)
	} else if err := schedule.CheckName(j.Name); err != nil {
		return exitcode.Usagef("--%s %q is not a schedule name: %v; use lowercase letters, digits and '-'", FlagScheduleName, j.Name, err)
	}
	if j.Delete {
		return nil
	}
	if err := o.job.validateJob("copy", "30 * * * *"); err != nil {
		return err
	}
	// The job's pull-node checks its options by the same rules.
	p := o.pull
	p.Image = j.Image
	p.Global = &GlobalOptions{LogLevel: "info", LogFormat: logging.FormatJSON, Output: OutputJSON}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("as options of the scheduled pull-node: %w", err)
	}
	args, err := o.pullNodeArgs()
	if err != nil {
		return err
	}
	podRole, err := deploy.ClusterRole(deploy.PullNodeRole)
	if err != nil {
		return err
	}
	nodeRole, err := deploy.ClusterRole(deploy.PullNodeNodesRole)
	if err != nil {
		return err
	}
	o.spec = schedule.PullNodeSpec{Spec: o.scheduledJob.spec(podRole.Rules), Node: o.pull.Node, PullNodeArgs: args, NodeRules: nodeRole.Rules}
	if err := o.spec.Validate(); err != nil {
		return exitcode.New(exitcode.Usage, err)
	}
	return nil
}

// pullNodeArgs are the arguments of the job's `hcpsnap pull-node`: the
// node and the image, then every pass-through flag that was set, in
// pull-node's order; flags left unset get the defaults of the image.
func (o *SchedulePullNodeOptions) pullNodeArgs() ([]string, error) {
	args := []string{"--" + FlagNode + "=" + o.pull.Node, "--" + FlagImage + "=" + o.job.Image}
	passed, err := o.passedArgs(FlagNode)
	return append(args, passed...), err
}

// Run prints, applies or deletes.
func (o *SchedulePullNodeOptions) Run(ctx context.Context) error {
	switch o.mode() {
	case FlagScheduleDelete:
		return o.runDelete(ctx)
	case "render":
		objs, err := schedule.RenderPullNode(o.spec)
		if err != nil {
			return exitcode.New(exitcode.Usage, err)
		}
		return o.print(objs)
	}
	return o.runApply(ctx)
}

func (o *SchedulePullNodeOptions) print(objs *schedule.Objects) error {
	s := o.spec
	header := fmt.Sprintf("# hcpsnap schedule pull-node %s: copy the management cluster's etcd snapshots off node %s at %q (%s).\n"+
		"# Apply with: kubectl apply --server-side --field-manager=%s -f FILE, or hcpsnap schedule pull-node ... --apply.\n"+
		"# pull-node's pod runs in namespace %s with a read-only hostPath: its Pod Security level must allow it (privileged);\n"+
		"# on OpenShift, the job's ServiceAccount may use the SCC hostmount-anyuid (its ClusterRole says so).\n",
		s.Name, s.Node, s.Cron, s.TimeZone, schedule.FieldManager, s.JobNamespace)
	return printObjects(o.Out, o.Global.Output, header, s.Spec, objs)
}

// runApply checks the namespace, the node and the Secret, then applies (or
// server-side dry-runs) the objects.
func (o *SchedulePullNodeOptions) runApply(ctx context.Context) error {
	objs, err := schedule.RenderPullNode(o.spec)
	if err != nil {
		return exitcode.New(exitcode.Usage, err)
	}
	s := o.spec
	if _, err := o.kube.CoreV1().Namespaces().Get(ctx, s.JobNamespace, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("namespace %s does not exist: create it (with a Pod Security level that allows hostPath), or check --%s", s.JobNamespace, FlagScheduleJobNamespace)
		}
		return exitcode.New(exitcode.Precondition, fmt.Errorf("read namespace %s: %w", s.JobNamespace, err))
	}
	if _, err := o.kube.CoreV1().Nodes().Get(ctx, s.Node, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("node %s not found: check --%s (kubectl get nodes -l node-role.kubernetes.io/master)", s.Node, FlagNode)
		}
		return exitcode.New(exitcode.Precondition, fmt.Errorf("read node %s: %w", s.Node, err))
	}
	if name := s.Credentials.Secret; name != "" {
		if _, err := o.kube.CoreV1().Secrets(s.JobNamespace).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("--%s %s: no such Secret in namespace %s: create it with keys %s and %s", FlagScheduleCredentialsSecret, name, s.JobNamespace, schedule.SecretKeyAccessKeyID, schedule.SecretKeySecretAccessKey)
		} else if err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("read Secret %s/%s: %w", s.JobNamespace, name, err))
		}
	}
	return applyObjects(ctx, o.Out, o.Global.Output, o.kube, objs, s.JobNamespace, s.Name, o.job.DryRun == dryRunServer,
		s.Cron, s.TimeZone, o.now(), fmt.Sprintf("copies node %s's snapshots", s.Node))
}

func newSchedulePullNodeCommand(stdout io.Writer) *cli.Command {
	o := &SchedulePullNodeOptions{scheduledJob: scheduledJob{Out: stdout}}
	return &cli.Command{
		Name:  "pull-node",
		Usage: "run hcpsnap pull-node on a schedule: render, apply or delete its CronJob",
		Description: `Renders (or applies with --apply) what a management cluster needs to copy its
own etcd snapshots off a master by itself, as hcpsnap pull-node does:

  hcpsnap schedule pull-node --node master-0 --schedule "30 * * * *" \
    --job-namespace hcpsnap --image registry.example.com/hcpsnap@sha256:... \
    --bucket backups --s3-credentials-secret hcpsnap-s3 --apply

  - a CronJob whose pod runs the image with 'pull-node' and the options given
    here (--node and --image first; pull-node's pod runs in the job's
    namespace, from the same image);
  - its ServiceAccount; a ClusterRole with the rules of deploy/rbac.yaml's
    hcpsnap-pull-node (pods, pods/exec, the OpenShift SCC hostmount-anyuid),
    bound in the job's namespace only; and one with hcpsnap-pull-node-nodes'
    (get nodes), bound cluster-wide.

The job's namespace must allow pull-node's pod: a read-only hostPath and
root (Pod Security level privileged; on OpenShift the SCC above). --delete
removes every object that carries the schedule's labels; hcpsnap schedule
--list lists it with the backup schedules.`,
		Flags:        o.flags(),
		Action:       o.action(action(o, &o.Global)),
		OnUsageError: usageError,
	}
}
