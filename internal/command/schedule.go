package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/deploy"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/internal/logging"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// Flag names of `hcpsnap schedule`. The backup's own flags are passed
// through under their own names (see scheduleExcluded).
const (
	FlagScheduleCron              = "schedule"
	FlagScheduleTimeZone          = "time-zone"
	FlagScheduleStartingDeadline  = "starting-deadline"
	FlagScheduleActiveDeadline    = "active-deadline"
	FlagScheduleSuccessfulHistory = "successful-jobs-history-limit"
	FlagScheduleFailedHistory     = "failed-jobs-history-limit"
	FlagScheduleSuspend           = "suspend"
	FlagScheduleImage             = "image"
	FlagScheduleName              = "name"
	FlagScheduleJobNamespace      = "job-namespace"
	FlagScheduleCredentialsSecret = "s3-credentials-secret"
	FlagScheduleRoleARN           = "role-arn"
	FlagScheduleS3Endpoint        = "s3-endpoint"
	FlagScheduleRegion            = "region"
	FlagScheduleS3CAConfigMap     = "s3-ca-configmap"
	FlagScheduleList              = "list"
	FlagScheduleDelete            = "delete"
	// EnvScheduleName sets --name; HCPSNAP_NAME would be too vague.
	EnvScheduleName = "HCPSNAP_SCHEDULE_NAME"
)

// Values of schedule's --dry-run, as kubectl has them.
const (
	dryRunNone   = "none"
	dryRunClient = "client"
	dryRunServer = "server"
)

// scheduleExcluded are the backup flags that make no sense in a scheduled
// job, each with the reason: they are not flags of `schedule` at all.
var scheduleExcluded = map[string]string{
	FlagResume:   "a scheduled run starts afresh; an unfinished run is resumed by hand",
	FlagAbandon:  "releasing a run is a person's decision",
	FlagYes:      "it only confirms --abandon",
	FlagDryRun:   "schedule's own --dry-run=server validates the schedule",
	FlagStateDir: "the job keeps its run files in its emptyDir (" + schedule.StateDir + ")",
	FlagKeyOut:   "a file in the job's pod is lost with the pod, and the AES key with it",
	FlagS3CABundle: "a path on this machine means nothing in the pod: name a ConfigMap with --" +
		FlagScheduleS3CAConfigMap,
}

// scheduleTargetFlags are the backup flags that choose the clusters: the
// schedule reads them to render its objects, and the job gets them first.
var scheduleTargetFlags = []string{FlagCluster, FlagNamespace, FlagSelector, FlagAllNamespaces}

// ScheduleOptions are the options of `hcpsnap schedule`.
type ScheduleOptions struct {
	Cron              string
	TimeZone          string
	StartingDeadline  time.Duration
	ActiveDeadline    time.Duration
	SuccessfulHistory int
	FailedHistory     int
	Suspend           bool
	Image             string
	Name              string
	JobNamespace      string
	CredentialsSecret string
	RoleARN           string
	S3Endpoint        string
	Region            string
	S3CAConfigMap     string
	Apply             bool
	DryRun            string
	List              bool
	Delete            bool
	Global            *GlobalOptions
	Out               io.Writer

	// backup receives the backup flags passed through; passThrough names
	// them in the order `backup --help` lists them.
	backup      BackupOptions
	passThrough []string
	// isSet and value read a flag of the parsed command line (or its
	// environment variable); nil means no flag was set.
	isSet func(string) bool
	value func(string) any
	now   func() time.Time

	// Filled by Validate.
	spec schedule.Spec
	// Filled by Complete.
	kube kubernetes.Interface
	dyn  dynamic.Interface
}

func (o *ScheduleOptions) flags() []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: FlagScheduleCron, Sources: cli.EnvVars(env(FlagScheduleCron)), Destination: &o.Cron,
			Usage: "When the backup runs: a cron schedule of five fields, as the CronJob takes it (for example \"0 2 * * *\", or @daily). Required to render or apply. The time zone goes in --time-zone, not in the schedule."},
		&cli.StringFlag{Name: FlagScheduleTimeZone, Value: "UTC", Sources: cli.EnvVars(env(FlagScheduleTimeZone)), Destination: &o.TimeZone,
			Usage: "IANA time zone of the schedule, such as Europe/Paris (the CronJob's spec.timeZone)."},
		&cli.DurationFlag{Name: FlagScheduleStartingDeadline, Value: time.Hour, Sources: cli.EnvVars(env(FlagScheduleStartingDeadline)), Destination: &o.StartingDeadline,
			Usage: "How late a missed run may still start (the controller was down, the previous run was still going); a later one waits for the next time. At least 10s."},
		&cli.DurationFlag{Name: FlagScheduleActiveDeadline, Value: 2 * time.Hour, Sources: cli.EnvVars(env(FlagScheduleActiveDeadline)), Destination: &o.ActiveDeadline,
			Usage: "Longest run of a backup Job; then its pod is stopped (SIGTERM: hcpsnap undoes its changes). It keeps a hung run from blocking every later one, since runs never overlap. 0 sets no limit."},
		&cli.IntFlag{Name: FlagScheduleSuccessfulHistory, Value: 3, Sources: cli.EnvVars(env(FlagScheduleSuccessfulHistory)), Destination: &o.SuccessfulHistory,
			Usage: "Finished successful Jobs kept, with their pods' logs."},
		&cli.IntFlag{Name: FlagScheduleFailedHistory, Value: 3, Sources: cli.EnvVars(env(FlagScheduleFailedHistory)), Destination: &o.FailedHistory,
			Usage: "Failed Jobs kept, with their pods' logs."},
		&cli.BoolFlag{Name: FlagScheduleSuspend, Sources: cli.EnvVars(env(FlagScheduleSuspend)), Destination: &o.Suspend,
			Usage: "Render or apply the schedule suspended: no run starts until spec.suspend is set to false."},
		&cli.StringFlag{Name: FlagScheduleImage, Sources: cli.EnvVars(env(FlagScheduleImage)), Destination: &o.Image,
			Usage: "The hcpsnap image the job runs, pinned by digest: REPOSITORY@sha256:DIGEST (the image that make image built, pushed to your registry). Required; a tag is refused."},
		&cli.StringFlag{Name: FlagScheduleName, Sources: cli.EnvVars(EnvScheduleName), Destination: &o.Name,
			Usage: "Name of the schedule: its CronJob, ServiceAccount and label hcpsnap.io/schedule (default: hcpsnap-<namespace>-<cluster>, or from the selector)."},
		&cli.StringFlag{Name: FlagScheduleJobNamespace, Sources: cli.EnvVars(env(FlagScheduleJobNamespace)), Destination: &o.JobNamespace,
			Usage: "Namespace of the CronJob, its Jobs and its ServiceAccount (default: --namespace; required with --all-namespaces)."},
		&cli.StringFlag{Name: FlagScheduleCredentialsSecret, Sources: cli.EnvVars(env(FlagScheduleCredentialsSecret)), Destination: &o.CredentialsSecret,
			Usage: "Secret in the job's namespace with the S3 credentials, under the keys " + schedule.SecretKeyAccessKeyID + ", " + schedule.SecretKeySecretAccessKey + " and optionally " + schedule.SecretKeySessionToken + ". This or --" + FlagScheduleRoleARN + " is required."},
		&cli.StringFlag{Name: FlagScheduleRoleARN, Sources: cli.EnvVars(env(FlagScheduleRoleARN)), Destination: &o.RoleARN,
			Usage: "IAM role the job assumes with its ServiceAccount token (web identity: AWS_ROLE_ARN, and a projected token of audience " + schedule.WebIdentityAudience + " in AWS_WEB_IDENTITY_TOKEN_FILE), instead of a Secret."},
		&cli.StringFlag{Name: FlagScheduleS3Endpoint, Sources: cli.EnvVars(env(FlagScheduleS3Endpoint)), Destination: &o.S3Endpoint,
			Usage: "URL of an S3-compatible endpoint as the job's pod reaches it (its AWS_ENDPOINT_URL_S3); empty for AWS S3."},
		&cli.StringFlag{Name: FlagScheduleRegion, Sources: cli.EnvVars(env(FlagScheduleRegion)), Destination: &o.Region,
			Usage: "AWS region of the bucket (the job's AWS_REGION)."},
		&cli.StringFlag{Name: FlagScheduleS3CAConfigMap, Sources: cli.EnvVars(env(FlagScheduleS3CAConfigMap)), Destination: &o.S3CAConfigMap,
			Usage: "ConfigMap in the job's namespace whose key " + schedule.S3CAKey + " is the PEM of the CA that signed the S3 endpoint's certificate; mounted read-only and given to the job as --" + FlagS3CABundle + "."},
		&cli.BoolFlag{Name: FlagApply, Destination: &o.Apply,
			Usage: "Server-side apply the objects to the management cluster (field manager hcpsnap) instead of printing them. An object of the same name that hcpsnap does not own is refused, not changed."},
		&cli.StringFlag{Name: FlagDryRun, Destination: &o.DryRun,
			Usage: "server: send the objects to the API server for validation (server-side apply with dryRun), persisting nothing. client or none: print them (the default)."},
		&cli.BoolFlag{Name: FlagScheduleList, Destination: &o.List,
			Usage: "List the schedules in the job's namespace (every namespace with --all-namespaces): schedule, last run and its result, last success, next run."},
		&cli.BoolFlag{Name: FlagScheduleDelete, Destination: &o.Delete,
			Usage: "Delete what --apply created for the schedule (--name, or the name derived from the target): only objects that carry its labels."},
	}
	backupFlags := o.backup.flags()
	own := map[string]bool{}
	for _, fl := range f {
		for _, n := range fl.Names() {
			own[n] = true
		}
	}
	o.passThrough = nil
	for _, fl := range backupFlags {
		name := fl.Names()[0]
		if _, excluded := scheduleExcluded[name]; excluded || own[name] {
			continue
		}
		o.passThrough = append(o.passThrough, name)
		if c, ok := fl.(cli.CategorizableFlag); ok {
			c.SetCategory("Options of the scheduled backup (passed to the job's hcpsnap backup)")
		}
		f = append(f, fl)
	}
	return f
}

// mode is what the command was asked to do.
func (o *ScheduleOptions) mode() string {
	switch {
	case o.List:
		return FlagScheduleList
	case o.Delete:
		return FlagScheduleDelete
	case o.DryRun == dryRunServer:
		return "dry-run=server"
	case o.Apply:
		return FlagApply
	}
	return "render"
}

// target is the clusters the flags name.
func (o *ScheduleOptions) target() schedule.Target {
	t := schedule.Target{Namespace: o.backup.Namespace, Cluster: o.backup.Cluster, Selector: o.backup.Fleet.Selector, AllNamespaces: o.backup.Fleet.AllNamespaces}
	if t.AllNamespaces {
		t.Namespace = ""
	}
	return t
}

// jobNamespace is --job-namespace, else the HostedClusters' --namespace.
func (o *ScheduleOptions) jobNamespace() string {
	if o.JobNamespace != "" || o.backup.Fleet.AllNamespaces {
		return o.JobNamespace
	}
	return o.backup.Namespace
}

// Validate checks the options without any I/O: each flag with a message
// that names it, then the backup options passed through with backup's own
// rules, then the rendered schedule as a whole.
func (o *ScheduleOptions) Validate() error {
	switch o.DryRun {
	case "", dryRunNone, dryRunClient, dryRunServer:
	default:
		return exitcode.Usagef("--%s=%s is not a mode: use --%s=server to validate against the API server, or leave it out to print", FlagDryRun, o.DryRun, FlagDryRun)
	}
	actions := 0
	for _, on := range []bool{o.List, o.Delete, o.Apply || o.DryRun == dryRunServer} {
		if on {
			actions++
		}
	}
	switch {
	case actions > 1:
		return exitcode.Usagef("--%s, --%s and --%s/--%s=server are different actions: choose one", FlagScheduleList, FlagScheduleDelete, FlagApply, FlagDryRun)
	case o.Apply && o.DryRun == dryRunClient:
		return exitcode.Usagef("--%s and --%s=client contradict each other: leave out --%s to print, or use --%s=server", FlagApply, FlagDryRun, FlagApply, FlagDryRun)
	case o.Global.Output == OutputMarkdown:
		return exitcode.Usagef("--output markdown is the format of a backup dry run; schedule writes YAML or text (text) or JSON (json)")
	}
	if o.List {
		if o.JobNamespace != "" {
			if errs := validation.IsDNS1123Label(o.JobNamespace); len(errs) > 0 {
				return exitcode.Usagef("--%s %q is not a namespace name: %s", FlagScheduleJobNamespace, o.JobNamespace, errs[0])
			}
		}
		return nil
	}
	if err := o.validateTarget(); err != nil {
		return err
	}
	if o.Name == "" {
		o.Name = schedule.DefaultName(o.target())
	} else if err := schedule.CheckName(o.Name); err != nil {
		return exitcode.Usagef("--%s %q is not a schedule name: %v; use lowercase letters, digits and '-'", FlagScheduleName, o.Name, err)
	}
	if o.Delete {
		return nil
	}
	return o.validateSchedule()
}

func (o *ScheduleOptions) validateTarget() error {
	t := o.target()
	switch {
	case t.Cluster != "" && (t.Selector != "" || t.AllNamespaces):
		return exitcode.Usagef("--%s names one cluster, --%s/--%s choose many: keep one (unset %s if it is set)", FlagCluster, FlagSelector, FlagAllNamespaces, env(FlagCluster))
	case t.Cluster == "" && t.Selector == "" && !t.AllNamespaces && !(o.Delete && o.Name != ""):
		return exitcode.Usagef("no clusters named: pass --%s NAME (one HostedCluster), --%s LABELS or --%s", FlagCluster, FlagSelector, FlagAllNamespaces)
	case t.AllNamespaces && o.JobNamespace == "":
		return exitcode.Usagef("--%s needs --%s: the namespace where the CronJob and its ServiceAccount live", FlagAllNamespaces, FlagScheduleJobNamespace)
	}
	if t.Cluster != "" {
		if errs := validation.IsDNS1123Label(t.Cluster); len(errs) > 0 {
			return exitcode.Usagef("--%s %q is not a valid Kubernetes name: %s", FlagCluster, t.Cluster, errs[0])
		}
	}
	if !t.AllNamespaces {
		if errs := validation.IsDNS1123Label(t.Namespace); len(errs) > 0 {
			return exitcode.Usagef("--%s %q is not a namespace name: %s", FlagNamespace, t.Namespace, errs[0])
		}
	}
	if errs := validation.IsDNS1123Label(o.jobNamespace()); len(errs) > 0 {
		return exitcode.Usagef("--%s %q is not a namespace name: %s", FlagScheduleJobNamespace, o.jobNamespace(), errs[0])
	}
	if t.Selector != "" {
		if _, err := labels.Parse(t.Selector); err != nil {
			return exitcode.Usagef("--%s %q is not a label selector: %v; write it as kubectl -l takes it, such as backup=daily", FlagSelector, t.Selector, err)
		}
	}
	return nil
}

// validateJob checks the flags of the CronJob itself (schedule, time zone,
// image, credentials, deadlines, history), shared by every scheduled job;
// what the job does and an example schedule go into the messages.
func (o *ScheduleOptions) validateJob(what, example string) error {
	if o.Cron == "" {
		return exitcode.Usagef("--%s is required: say when the %s runs, such as %q (or set %s)", FlagScheduleCron, what, example, env(FlagScheduleCron))
	}
	if strings.Contains(o.Cron, "TZ") {
		return exitcode.Usagef("--%s %q holds a time zone, which the CronJob API refuses: drop TZ=/CRON_TZ= and pass --%s instead", FlagScheduleCron, o.Cron, FlagScheduleTimeZone)
	}
	if _, err := schedule.ParseCron(o.Cron); err != nil {
		return exitcode.Usagef("--%s %q is not a valid cron schedule: %v; use five fields (minute hour day-of-month month day-of-week), such as %q", FlagScheduleCron, o.Cron, err, example)
	}
	if _, err := schedule.LoadTimeZone(o.TimeZone); err != nil {
		return exitcode.Usagef("--%s %q: %v; use an IANA name such as UTC or Europe/Paris", FlagScheduleTimeZone, o.TimeZone, err)
	}
	if err := schedule.CheckImage(o.Image); err != nil {
		if o.Image == "" {
			return exitcode.Usagef("--%s is required: the hcpsnap image pinned by digest, REPOSITORY@sha256:DIGEST (or set %s)", FlagScheduleImage, env(FlagScheduleImage))
		}
		return exitcode.Usagef("--%s %q: %v; pin it by digest, REPOSITORY@sha256:DIGEST (`make image` prints the digest; a registry shows a pushed tag's)", FlagScheduleImage, o.Image, err)
	}
	switch {
	case o.CredentialsSecret == "" && o.RoleARN == "":
		return exitcode.Usagef("no S3 credentials for the job: pass --%s NAME (a Secret with %s and %s) or --%s ARN (web identity)", FlagScheduleCredentialsSecret, schedule.SecretKeyAccessKeyID, schedule.SecretKeySecretAccessKey, FlagScheduleRoleARN)
	case o.CredentialsSecret != "" && o.RoleARN != "":
		return exitcode.Usagef("--%s and --%s are two sources of S3 credentials: keep one", FlagScheduleCredentialsSecret, FlagScheduleRoleARN)
	}
	for flag, name := range map[string]string{FlagScheduleCredentialsSecret: o.CredentialsSecret, FlagScheduleS3CAConfigMap: o.S3CAConfigMap} {
		if name == "" {
			continue
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return exitcode.Usagef("--%s %q is not an object name: %s", flag, name, errs[0])
		}
	}
	if o.RoleARN != "" && !strings.HasPrefix(o.RoleARN, "arn:") {
		return exitcode.Usagef("--%s %q is not an ARN: use arn:aws:iam::ACCOUNT:role/NAME", FlagScheduleRoleARN, o.RoleARN)
	}
	if o.StartingDeadline < 10*time.Second {
		return exitcode.Usagef("--%s %s is too short: the CronJob controller looks every 10s, so use 10s or more", FlagScheduleStartingDeadline, o.StartingDeadline)
	}
	if o.ActiveDeadline < 0 {
		return exitcode.Usagef("--%s %s is negative: use a duration, or 0 for no limit", FlagScheduleActiveDeadline, o.ActiveDeadline)
	}
	for flag, n := range map[string]int{FlagScheduleSuccessfulHistory: o.SuccessfulHistory, FlagScheduleFailedHistory: o.FailedHistory} {
		if n < 0 || n > 100 {
			return exitcode.Usagef("--%s %d is out of range: keep 0 to 100 Jobs", flag, n)
		}
	}
	return nil
}

func (o *ScheduleOptions) validateSchedule() error {
	if err := o.validateJob("backup", "0 2 * * *"); err != nil {
		return err
	}
	if err := o.validateBackup(); err != nil {
		return err
	}
	args, err := o.backupArgs()
	if err != nil {
		return err
	}
	role, err := deploy.ClusterRole(deploy.BackupRole)
	if err != nil {
		return err
	}
	o.spec = schedule.Spec{
		Name: o.Name, JobNamespace: o.jobNamespace(), Target: o.target(),
		Cron: o.Cron, TimeZone: o.TimeZone, StartingDeadline: o.StartingDeadline, ActiveDeadline: o.ActiveDeadline,
		SuccessfulJobsHistory: int32(o.SuccessfulHistory), FailedJobsHistory: int32(o.FailedHistory), Suspend: o.Suspend,
		Image: o.Image, BackupArgs: args,
		Credentials: schedule.Credentials{Secret: o.CredentialsSecret, RoleARN: o.RoleARN},
		S3Endpoint:  o.S3Endpoint, Region: o.Region, S3CAConfigMap: o.S3CAConfigMap,
		Rules: role.Rules,
	}
	if err := o.spec.Validate(); err != nil {
		return exitcode.New(exitcode.Usage, err)
	}
	return nil
}

// validateBackup checks the options passed through with backup's own
// Validate, as the job's `hcpsnap backup` will check them.
func (o *ScheduleOptions) validateBackup() error {
	b := o.backup
	b.Global = &GlobalOptions{LogLevel: "info", LogFormat: logging.FormatJSON, Output: OutputJSON}
	b.Deployments = slices.Clone(b.Deployments)
	b.SkipSteps = slices.Clone(b.SkipSteps)
	if err := b.Validate(); err != nil {
		return fmt.Errorf("as options of the scheduled backup: %w", err)
	}
	return nil
}

// backupArgs are the arguments of the job's `hcpsnap backup`: the target
// first, then every pass-through flag that was set (on the command line or
// through its HCPSNAP_ variable), in backup's order. Flags left unset are
// left out, so that the job gets the defaults of the image it runs.
func (o *ScheduleOptions) backupArgs() ([]string, error) {
	t := o.target()
	var args []string
	switch {
	case !t.IsFleet():
		args = append(args, "--"+FlagCluster+"="+t.Cluster, "--"+FlagNamespace+"="+t.Namespace)
	case t.AllNamespaces:
		args = append(args, "--"+FlagAllNamespaces)
		if t.Selector != "" {
			args = append(args, "--"+FlagSelector+"="+t.Selector)
		}
	default:
		args = append(args, "--"+FlagSelector+"="+t.Selector, "--"+FlagNamespace+"="+t.Namespace)
	}
	if o.isSet == nil {
		return args, nil
	}
	for _, name := range o.passThrough {
		if slices.Contains(scheduleTargetFlags, name) || !o.isSet(name) {
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

// formatFlag writes a flag and its value as one argument, --name=value,
// which every flag type parses back the same.
func formatFlag(name string, v any) (string, error) {
	switch x := v.(type) {
	case string:
		return "--" + name + "=" + x, nil
	case bool:
		return "--" + name + "=" + strconv.FormatBool(x), nil
	case time.Duration:
		return "--" + name + "=" + x.String(), nil
	case []string:
		return "--" + name + "=" + strings.Join(x, ","), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "--" + name + "=" + strconv.FormatInt(rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "--" + name + "=" + strconv.FormatUint(rv.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		return "--" + name + "=" + strconv.FormatFloat(rv.Float(), 'g', -1, 64), nil
	}
	return "", fmt.Errorf("backup flag --%s holds a %T, which schedule cannot pass to the job: this is a bug", name, v)
}

// Complete builds the clients, unless the command only prints.
func (o *ScheduleOptions) Complete(context.Context) error {
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
	if o.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	o.dyn, err = dynamic.NewForConfig(cfg)
	return err
}

// Run prints, applies, lists or deletes.
func (o *ScheduleOptions) Run(ctx context.Context) error {
	switch o.mode() {
	case FlagScheduleList:
		return o.runList(ctx)
	case FlagScheduleDelete:
		return o.runDelete(ctx)
	case "render":
		objs, err := schedule.Render(o.spec)
		if err != nil {
			return exitcode.New(exitcode.Usage, err)
		}
		return o.print(objs)
	default:
		return o.runApply(ctx)
	}
}

func (o *ScheduleOptions) print(objs *schedule.Objects) error {
	s := o.spec
	header := fmt.Sprintf("# hcpsnap schedule %s: back up %s at %q (%s).\n"+
		"# Apply with: kubectl apply --server-side --field-manager=%s -f FILE, or hcpsnap schedule ... --apply.\n",
		s.Name, s.Target, s.Cron, s.TimeZone, schedule.FieldManager)
	return printObjects(o.Out, o.Global.Output, header, s, objs)
}

// printObjects writes a schedule's objects in their apply order: with -o
// json one object per line, else one YAML stream under header (comment
// lines saying what the schedule does), to which it adds the Secret and
// ConfigMap that the job's pod needs and that the schedule does not make.
func printObjects(w io.Writer, output, header string, s schedule.Spec, objs *schedule.Objects) error {
	if output == OutputJSON {
		enc := json.NewEncoder(w)
		for _, obj := range objs.List() {
			m, err := schedule.ToUnstructured(obj)
			if err != nil {
				return err
			}
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
		return nil
	}
	if c := s.Credentials.Secret; c != "" {
		header += fmt.Sprintf("# It needs Secret %s/%s with keys %s and %s (and optionally %s).\n",
			s.JobNamespace, c, schedule.SecretKeyAccessKeyID, schedule.SecretKeySecretAccessKey, schedule.SecretKeySessionToken)
	}
	if cm := s.S3CAConfigMap; cm != "" {
		header += fmt.Sprintf("# It needs ConfigMap %s/%s with the S3 endpoint's CA under key %s.\n", s.JobNamespace, cm, schedule.S3CAKey)
	}
	return schedule.WriteYAML(w, header, objs.List())
}

// runApply checks every precondition on the live cluster, then applies (or
// server-side dry-runs) the objects. Nothing is written before every check
// has passed.
func (o *ScheduleOptions) runApply(ctx context.Context) error {
	objs, err := schedule.Render(o.spec)
	if err != nil {
		return exitcode.New(exitcode.Usage, err)
	}
	if err := o.checkCluster(ctx); err != nil {
		return err
	}
	return applyObjects(ctx, o.Out, o.Global.Output, o.kube, objs, o.spec.JobNamespace, o.spec.Name, o.DryRun == dryRunServer,
		o.spec.Cron, o.spec.TimeZone, o.now(), "backs up "+o.spec.Target.String())
}

// applyObjects applies (or server-side dry-runs) a schedule's objects, all
// preconditions checked, and reports each object and the schedule's next
// run (does says what the job does, for that line). A failure before any
// write is a precondition failure; one after says what was applied.
func applyObjects(ctx context.Context, w io.Writer, output string, kube kubernetes.Interface, objs *schedule.Objects,
	namespace, name string, dry bool, cron, timeZone string, now time.Time, does string) error {
	done, err := schedule.Apply(ctx, kube, objs, namespace, name, dry)
	if errors.Is(err, schedule.ErrNotOwned) || (err != nil && len(done) == 0) {
		return exitcode.New(exitcode.Precondition, err)
	}
	if err != nil {
		return fmt.Errorf("%w (applied before it: %s)", err, joinRefs(done))
	}
	verb := "applied"
	if dry {
		verb = "validated by the API server (server-side dry run, nothing persisted)"
	}
	if output == OutputJSON {
		enc := json.NewEncoder(w)
		for _, r := range done {
			if err := enc.Encode(struct {
				MessageType string `json:"message_type"`
				schedule.Ref
				DryRun bool `json:"dryRun"`
			}{"applied", r, dry}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range done {
		fmt.Fprintf(w, "%s %s\n", r, verb)
	}
	if dry {
		_, err = fmt.Fprintf(w, "Server-side dry run of schedule %s/%s passed: nothing was persisted.\n", namespace, name)
		return err
	}
	next, _ := schedule.NextRun(cron, timeZone, now)
	_, err = fmt.Fprintf(w, "Schedule %s/%s applied: %s at %q (%s); next run %s.\n",
		namespace, name, does, cron, timeZone, next.UTC().Format(time.RFC3339))
	return err
}

// checkCluster reads what the schedule needs to exist: the namespaces it
// writes to, the HostedCluster or at least one cluster the selector matches,
// and the Secret and ConfigMap the pod mounts. Each failure is one line.
func (o *ScheduleOptions) checkCluster(ctx context.Context) error {
	s := o.spec
	t := s.Target
	checkNamespace := func(ns string) error {
		if _, err := o.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return exitcode.Preconditionf("namespace %s does not exist: create it, or check --%s, --%s and --%s", ns, FlagScheduleJobNamespace, FlagNamespace, FlagCluster)
			}
			return exitcode.New(exitcode.Precondition, fmt.Errorf("read namespace %s: %w", ns, err))
		}
		return nil
	}
	if err := checkNamespace(s.JobNamespace); err != nil {
		return err
	}
	if !t.IsFleet() {
		_, err := o.dyn.Resource(kube.HostedClusterGVR).Namespace(t.Namespace).Get(ctx, t.Cluster, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("HostedCluster %s/%s not found: check --%s and --%s (kubectl get hostedclusters -A)", t.Namespace, t.Cluster, FlagCluster, FlagNamespace)
		}
		if err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("read HostedCluster %s/%s: %w", t.Namespace, t.Cluster, err))
		}
		// The RoleBindings go into the control plane's namespace.
		if err := checkNamespace(t.Namespace + "-" + t.Cluster); err != nil {
			return err
		}
	} else {
		list, err := o.dyn.Resource(kube.HostedClusterGVR).Namespace(t.Namespace).List(ctx, metav1.ListOptions{LabelSelector: t.Selector, Limit: 1})
		if err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("list HostedClusters: %w", err))
		}
		if len(list.Items) == 0 {
			where := "namespace " + t.Namespace
			if t.AllNamespaces {
				where = "any namespace"
			}
			return exitcode.Preconditionf("--%s %q matches no HostedCluster in %s: check the labels (kubectl get hostedclusters -A --show-labels)", FlagSelector, t.Selector, where)
		}
	}
	return checkJobInputs(ctx, o.kube, s)
}

// checkJobInputs reads the objects of the job's namespace that the job's
// pod mounts and the schedule does not make: the S3 credentials Secret,
// with both keys, and the CA ConfigMap. Each failure is one line.
func checkJobInputs(ctx context.Context, kube kubernetes.Interface, s schedule.Spec) error {
	if name := s.Credentials.Secret; name != "" {
		sec, err := kube.CoreV1().Secrets(s.JobNamespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("--%s %s: no such Secret in namespace %s: create it with keys %s and %s", FlagScheduleCredentialsSecret, name, s.JobNamespace, schedule.SecretKeyAccessKeyID, schedule.SecretKeySecretAccessKey)
		}
		if err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("read Secret %s/%s: %w", s.JobNamespace, name, err))
		}
		for _, k := range []string{schedule.SecretKeyAccessKeyID, schedule.SecretKeySecretAccessKey} {
			if len(sec.Data[k]) == 0 {
				return exitcode.Preconditionf("--%s %s: Secret %s/%s has no key %s: the job reads its S3 credentials from keys %s and %s", FlagScheduleCredentialsSecret, name, s.JobNamespace, name, k, schedule.SecretKeyAccessKeyID, schedule.SecretKeySecretAccessKey)
			}
		}
	}
	if name := s.S3CAConfigMap; name != "" {
		cm, err := kube.CoreV1().ConfigMaps(s.JobNamespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("--%s %s: no such ConfigMap in namespace %s: create it with the CA's PEM under key %s", FlagScheduleS3CAConfigMap, name, s.JobNamespace, schedule.S3CAKey)
		}
		if err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("read ConfigMap %s/%s: %w", s.JobNamespace, name, err))
		}
		if cm.Data[schedule.S3CAKey] == "" {
			return exitcode.Preconditionf("--%s %s: ConfigMap %s/%s has no key %s: put the CA's PEM there", FlagScheduleS3CAConfigMap, name, s.JobNamespace, name, schedule.S3CAKey)
		}
	}
	return nil
}

func (o *ScheduleOptions) runDelete(ctx context.Context) error {
	ns := o.jobNamespace()
	done, err := schedule.Delete(ctx, o.kube, ns, o.Name)
	switch {
	case errors.Is(err, schedule.ErrNoSchedule):
		return exitcode.Preconditionf("no schedule %s in namespace %s: nothing carries its labels (see hcpsnap schedule --%s)", o.Name, ns, FlagScheduleList)
	case err != nil && len(done) == 0:
		return exitcode.New(exitcode.Precondition, err)
	case err != nil:
		return fmt.Errorf("%w (deleted before it: %s)", err, joinRefs(done))
	}
	if o.Global.Output == OutputJSON {
		enc := json.NewEncoder(o.Out)
		for _, r := range done {
			if err := enc.Encode(struct {
				MessageType string `json:"message_type"`
				schedule.Ref
			}{"deleted", r}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range done {
		fmt.Fprintf(o.Out, "%s deleted\n", r)
	}
	return nil
}

func (o *ScheduleOptions) runList(ctx context.Context) error {
	ns := o.jobNamespace()
	if o.backup.Fleet.AllNamespaces {
		ns = metav1.NamespaceAll
	}
	list, err := schedule.List(ctx, o.kube, ns, o.now())
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	for _, s := range list {
		if s.Problem != "" {
			log.FromContext(ctx).Warn("schedule "+s.Namespace+"/"+s.Name+": "+s.Problem, "schedule", s.Schedule)
		}
	}
	return writeScheduleList(o.Out, o.Global.Output, ns, list)
}

// writeScheduleList writes --list: a table, or one JSON object per schedule.
func writeScheduleList(out io.Writer, format, namespace string, list []schedule.Status) error {
	if format == OutputJSON {
		enc := json.NewEncoder(out)
		for _, s := range list {
			if err := enc.Encode(struct {
				MessageType string `json:"message_type"`
				schedule.Status
			}{"schedule", s}); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list) == 0 {
		where := "namespace " + namespace
		if namespace == "" {
			where = "any namespace"
		}
		_, err := fmt.Fprintf(out, "no hcpsnap schedules in %s\n", where)
		return err
	}
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tNAME\tSCHEDULE\tSUSPENDED\tLAST RUN\tRESULT\tLAST SUCCESS\tNEXT RUN\tTARGET")
	for _, s := range list {
		next := when(s.NextRun)
		if s.Suspended {
			next = "- (suspended)"
		}
		tz := s.TimeZone
		if tz == "" {
			tz = "controller's zone"
		}
		fmt.Fprintf(w, "%s\t%s\t%s (%s)\t%t\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.Schedule, tz, s.Suspended,
			when(s.LastSchedule), s.LastResult, when(s.LastSuccessful), next, s.Target)
	}
	return w.Flush()
}

func joinRefs(refs []schedule.Ref) string {
	s := make([]string, len(refs))
	for i, r := range refs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func newScheduleCommand(stdout io.Writer) *cli.Command {
	o := &ScheduleOptions{Out: stdout}
	cmd := o.command(action(o, &o.Global))
	cmd.Commands = []*cli.Command{newScheduleManagementCommand(stdout), newSchedulePullNodeCommand(stdout), newScheduleVerifyCommand(stdout)}
	return cmd
}

// command is schedule's urfave/cli command running run once the flags that
// are read by name are in o.
func (o *ScheduleOptions) command(run cli.ActionFunc) *cli.Command {
	return &cli.Command{
		Name:  "schedule",
		Usage: "back up HostedClusters on a schedule: render, apply, list or delete a CronJob",
		Description: `Renders what a management cluster needs to run hcpsnap backup by itself, as
one YAML stream on stdout (for GitOps), or applies it with --apply:

  hcpsnap schedule --cluster example --schedule "0 2 * * *" --time-zone Europe/Paris \
    --image registry.example.com/hcpsnap@sha256:... --bucket backups \
    --s3-credentials-secret hcpsnap-s3 --apply

  - a CronJob (concurrencyPolicy Forbid, a starting deadline, history limits)
    whose pod runs the image with 'backup' and every backup option given here
    (the target first; --resume, --abandon, --yes, --dry-run, --state-dir,
    --key-out and --s3-ca-bundle are not options of a scheduled job);
  - its ServiceAccount, a ClusterRole with exactly the rules of
    deploy/rbac.yaml's hcpsnap-backup, and RoleBindings in the HostedCluster's
    namespace and its control plane namespace (a ClusterRoleBinding for a
    --selector or --all-namespaces: future clusters' namespaces are unknown).

A failed Job is not retried (backoffLimit 0): the backup has undone its
changes, or holds the cluster's lock until someone finishes it, and the next
scheduled run is the retry. Every object carries the labels
app.kubernetes.io/managed-by=hcpsnap, hcpsnap.io/schedule=NAME and
hcpsnap.io/schedule-namespace=NAMESPACE; --apply and --delete refuse to touch
a same-named object without them. --list shows each schedule's last run, its
result and its next run.`,
		Flags: o.flags(),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			o.isSet = cmd.IsSet
			o.value = cmd.Value
			return run(ctx, cmd)
		},
		OnUsageError: usageError,
	}
}
