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
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/management"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// Flag names of `hcpsnap schedule management`. Their variables carry
// HCPSNAP_MANAGEMENT_ so that they never set a flag of `schedule` itself.
const (
	FlagManagementHost       = "host"
	FlagManagementOnCalendar = "on-calendar"
	FlagManagementTimeZone   = "time-zone"
	FlagManagementTargetDir  = "target-dir"
	FlagManagementAllowTmpfs = "allow-tmpfs"
	FlagManagementKeep       = "keep"
	FlagManagementName       = "name"
)

// managementEnv is the variable of a flag of `schedule management`.
func managementEnv(flag string) string { return env("management-" + flag) }

// managementElapses is how many next runs are shown.
const managementElapses = 3

// ScheduleManagementOptions are the options of `hcpsnap schedule management`.
type ScheduleManagementOptions struct {
	Host       string
	OnCalendar string
	TimeZone   string
	TargetDir  string
	AllowTmpfs bool
	Keep       int
	Name       string
	Apply      bool
	DryRun     string
	Delete     bool
	Global     *GlobalOptions
	Out        io.Writer

	now func() time.Time
	// Filled by Validate.
	config management.Config
	// Filled by Complete.
	kube kubernetes.Interface
	disc discovery.DiscoveryInterface
	mcs  management.MachineConfigs
}

func (o *ScheduleManagementOptions) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: FlagManagementHost, Sources: cli.EnvVars(managementEnv(FlagManagementHost)), Destination: &o.Host,
			Usage: "Node name of the one master that takes the snapshots (kubectl get nodes -l " + management.LabelNodeMaster + "). Required to render or apply. The MachineConfig goes to every master; the others' runs exit at once. --apply and --dry-run=server check that the node exists and is a master; a plain render does not (it needs no cluster)."},
		&cli.StringFlag{Name: FlagManagementOnCalendar, Value: management.DefaultOnCalendar, Sources: cli.EnvVars(managementEnv(FlagManagementOnCalendar)), Destination: &o.OnCalendar,
			Usage: "When the snapshots are taken: a systemd calendar event (systemd.time(7)), such as \"*-*-* 02:00:00\", \"Mon..Fri *-*-* 01:30\", \"*-*-* 00/6:00\" or daily. Checked here as systemd parses it. The time zone goes in --time-zone, not here."},
		&cli.StringFlag{Name: FlagManagementTimeZone, Value: "UTC", Sources: cli.EnvVars(managementEnv(FlagManagementTimeZone)), Destination: &o.TimeZone,
			Usage: "IANA time zone of --on-calendar, such as Europe/Paris; written into the timer's OnCalendar= (masters run in UTC)."},
		&cli.StringFlag{Name: FlagManagementTargetDir, Value: management.DefaultTargetDir, Sources: cli.EnvVars(managementEnv(FlagManagementTargetDir)), Destination: &o.TargetDir,
			Usage: "Folder on the master that receives one folder per snapshot run: under /home/core, /mnt or /var (not etcd's, the kubelet's or the container runtime's folders), or under /tmp with --" + FlagManagementAllowTmpfs + "."},
		&cli.BoolFlag{Name: FlagManagementAllowTmpfs, Sources: cli.EnvVars(managementEnv(FlagManagementAllowTmpfs)), Destination: &o.AllowTmpfs,
			Usage: "Allow a --" + FlagManagementTargetDir + " under /tmp, a tmpfs: its snapshots are lost at the next reboot, including the one that installs this MachineConfig."},
		&cli.IntFlag{Name: FlagManagementKeep, Value: management.DefaultKeep, Sources: cli.EnvVars(managementEnv(FlagManagementKeep)), Destination: &o.Keep,
			Usage: fmt.Sprintf("Complete backups the script keeps on the node, 1 to %d; it never deletes the last complete one.", management.MaxKeep)},
		&cli.StringFlag{Name: FlagManagementName, Value: management.DefaultName, Sources: cli.EnvVars(managementEnv(FlagManagementName)), Destination: &o.Name,
			Usage: "Name of the MachineConfig."},
		&cli.BoolFlag{Name: FlagApply, Destination: &o.Apply,
			Usage: "Server-side apply the MachineConfig (field manager hcpsnap) after a server-side dry run, instead of printing it. The Machine Config Operator then drains and reboots the masters one at a time. A same-named MachineConfig without the label " + management.LabelManagedBy + "=" + management.ManagedBy + " is refused, not changed."},
		&cli.StringFlag{Name: FlagDryRun, Destination: &o.DryRun,
			Usage: "server: check --host on the cluster and send the MachineConfig (or, with --delete, its deletion) to the API server for validation, persisting nothing. client or none: print it (the default)."},
		&cli.BoolFlag{Name: FlagScheduleDelete, Destination: &o.Delete,
			Usage: "Delete the MachineConfig --name, only if it carries the label " + management.LabelManagedBy + "=" + management.ManagedBy + ". The Machine Config Operator then drains and reboots the masters to remove the script and its units; snapshots already taken stay on the node."},
	}
}

// mode is what the command was asked to do.
func (o *ScheduleManagementOptions) mode() string {
	switch {
	case o.Delete:
		return FlagScheduleDelete
	case o.DryRun == dryRunServer || o.Apply:
		return FlagApply
	}
	return "render"
}

// dryRun says whether the API server only validates.
func (o *ScheduleManagementOptions) dryRun() bool { return o.DryRun == dryRunServer }

// Validate checks the flags without any I/O, each with a message that
// names it.
func (o *ScheduleManagementOptions) Validate() error {
	switch o.DryRun {
	case "", dryRunNone, dryRunClient, dryRunServer:
	default:
		return exitcode.Usagef("--%s=%s is not a mode: use --%s=server to validate against the API server, or leave it out to print", FlagDryRun, o.DryRun, FlagDryRun)
	}
	switch {
	case o.Delete && o.Apply:
		return exitcode.Usagef("--%s and --%s are different actions: choose one", FlagScheduleDelete, FlagApply)
	case o.Apply && o.DryRun == dryRunClient:
		return exitcode.Usagef("--%s and --%s=client contradict each other: leave out --%s to print, or use --%s=server", FlagApply, FlagDryRun, FlagApply, FlagDryRun)
	case o.Delete && o.DryRun == dryRunClient:
		return exitcode.Usagef("--%s with --%s=client prints nothing: use --%s=server to validate the deletion", FlagScheduleDelete, FlagDryRun, FlagDryRun)
	case o.Global.Output == OutputMarkdown:
		return exitcode.Usagef("--output markdown is the format of a backup dry run; schedule management writes YAML (text) or JSON (json)")
	}
	o.config = management.Config{
		Name: o.Name, Host: o.Host, OnCalendar: o.OnCalendar, TimeZone: o.TimeZone,
		TargetDir: o.TargetDir, AllowTmpfs: o.AllowTmpfs, Keep: o.Keep,
	}
	if o.Delete {
		// Only the name matters; the other flags keep their defaults.
		c := management.Config{Name: o.Name, Host: "unused", OnCalendar: management.DefaultOnCalendar, TimeZone: "UTC", TargetDir: management.DefaultTargetDir, Keep: 1}
		return fieldError(c.Validate())
	}
	return fieldError(o.config.Validate())
}

// fieldError turns an invalid setting into a usage error naming its flag.
func fieldError(err error) error {
	var fe *management.FieldError
	if errors.As(err, &fe) {
		return exitcode.Usagef("--%s", fe.Error())
	}
	return exitcode.New(exitcode.Usage, err)
}

// Complete builds the clients, unless the command only prints.
func (o *ScheduleManagementOptions) Complete(context.Context) error {
	if o.now == nil {
		o.now = time.Now
	}
	if o.mode() == "render" || o.mcs != nil {
		return nil
	}
	cfg, err := kube.RESTConfig(o.Global.Kubeconfig, o.Global.Context)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	if o.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	o.disc = o.kube.Discovery()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	o.mcs = dyn.Resource(management.MachineConfigGVR)
	return nil
}

// Run prints, applies or deletes.
func (o *ScheduleManagementOptions) Run(ctx context.Context) error {
	logger := log.FromContext(ctx)
	if o.mode() == FlagScheduleDelete {
		return o.runDelete(ctx)
	}
	if warning, _ := management.CheckTargetDir(o.config.TargetDir, o.config.AllowTmpfs); warning != "" {
		logger.Warn(warning)
	}
	mc, err := o.config.MachineConfig()
	if err != nil {
		return err
	}
	elapses, err := o.config.Elapses(o.now(), managementElapses)
	if err != nil {
		return err
	}
	if len(elapses) == 0 {
		return exitcode.Usagef("--%s %q never elapses after now in %s: give a repeating event, such as %q", FlagManagementOnCalendar, o.OnCalendar, o.TimeZone, management.DefaultOnCalendar)
	}
	next := make([]string, len(elapses))
	for i, e := range elapses {
		next[i] = e.Format(time.RFC3339)
	}
	if o.mode() == "render" {
		logger.Info("rendered only: --host was not checked against a cluster (--dry-run=server or --apply check that it is a master)", "host", o.Host, "next", next)
		return o.print(mc)
	}
	return o.runApply(ctx, mc, next)
}

func (o *ScheduleManagementOptions) print(mc *unstructured.Unstructured) error {
	if o.Global.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(mc.Object)
	}
	c := o.config
	header := fmt.Sprintf("# hcpsnap schedule management: MachineConfig %s makes master %s take an etcd backup (cluster-backup.sh)\n"+
		"# into %s at %q (%s), keeping the newest %d complete ones.\n"+
		"# Applying it makes the Machine Config Operator drain and reboot the masters one at a time.\n"+
		"# Apply with: oc apply --server-side --field-manager=%s -f FILE, or hcpsnap schedule management ... --apply.\n",
		c.Name, c.Host, c.TargetDir, c.OnCalendar, c.TimeZone, c.Keep, management.FieldManager)
	return schedule.WriteYAML(o.Out, header, []runtime.Object{mc})
}

// managementEvent is a line of -o json for --apply and --delete.
type managementEvent struct {
	MessageType string   `json:"message_type"`
	Kind        string   `json:"kind"`
	Name        string   `json:"name"`
	Action      string   `json:"action"`
	DryRun      bool     `json:"dryRun"`
	Host        string   `json:"host,omitempty"`
	NextRuns    []string `json:"nextRuns,omitempty"`
}

// checkCluster checks, before any write, that the cluster serves
// MachineConfigs and that --host is a master.
func (o *ScheduleManagementOptions) checkCluster(ctx context.Context, host bool) error {
	if err := management.CheckAPI(o.disc); err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	if !host {
		return nil
	}
	err := management.CheckHost(ctx, o.kube, o.config.Host)
	switch {
	case errors.Is(err, management.ErrNoNode):
		return exitcode.Preconditionf("--%s %s: no such node: give the node name of a master (kubectl get nodes -l %s)", FlagManagementHost, o.config.Host, management.LabelNodeMaster)
	case errors.Is(err, management.ErrNotMaster):
		return exitcode.Preconditionf("--%s %s is not a master (no label %s or %s): give a master's node name, since only masters run etcd", FlagManagementHost, o.config.Host, management.LabelNodeMaster, management.LabelNodeControlPlane)
	case err != nil:
		return exitcode.New(exitcode.Precondition, err)
	}
	return nil
}

func (o *ScheduleManagementOptions) runApply(ctx context.Context, mc *unstructured.Unstructured, next []string) error {
	if err := o.checkCluster(ctx, true); err != nil {
		return err
	}
	dry := o.dryRun()
	outcome, err := management.Apply(ctx, o.mcs, mc, dry)
	if err != nil {
		// One apply is atomic: when it fails, nothing was changed.
		return exitcode.New(exitcode.Precondition, err)
	}
	if o.Global.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(managementEvent{MessageType: "machineconfig", Kind: "MachineConfig", Name: o.config.Name,
			Action: string(outcome), DryRun: dry, Host: o.config.Host, NextRuns: next})
	}
	c := o.config
	var msg string
	switch outcome {
	case management.Validated:
		msg = fmt.Sprintf("MachineConfig/%s validated by the API server (server-side dry run, nothing persisted); node %s is a master.\n"+
			"Applying it makes the Machine Config Operator drain and reboot the masters one at a time.\n", c.Name, c.Host)
	case management.Unchanged:
		msg = fmt.Sprintf("MachineConfig/%s unchanged: nothing new for the Machine Config Operator to roll out, no reboot.\n", c.Name)
	default:
		msg = fmt.Sprintf("MachineConfig/%s %s. The Machine Config Operator now drains and reboots the masters one at a time to install it\n"+
			"(watch: oc get machineconfigpool master). Then master %s takes a snapshot into %s at %q (%s), keeping %d.\n", c.Name, outcome, c.Host, c.TargetDir, c.OnCalendar, c.TimeZone, c.Keep)
	}
	msg += fmt.Sprintf("Next runs: %s.\n", strings.Join(next, ", "))
	_, err = io.WriteString(o.Out, msg)
	return err
}

func (o *ScheduleManagementOptions) runDelete(ctx context.Context) error {
	if err := o.checkCluster(ctx, false); err != nil {
		return err
	}
	dry := o.dryRun()
	err := management.Delete(ctx, o.mcs, o.Name, dry)
	switch {
	case errors.Is(err, management.ErrNoMachineConfig):
		return exitcode.Preconditionf("--%s %s: no such MachineConfig: nothing to delete (oc get machineconfigs -l %s=%s)", FlagManagementName, o.Name, management.LabelManagedBy, management.ManagedBy)
	case err != nil:
		return exitcode.New(exitcode.Precondition, err)
	}
	if o.Global.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(managementEvent{MessageType: "machineconfig", Kind: "MachineConfig", Name: o.Name, Action: "deleted", DryRun: dry})
	}
	if dry {
		_, err = fmt.Fprintf(o.Out, "MachineConfig/%s: its deletion was validated by the API server (server-side dry run, nothing deleted).\n", o.Name)
		return err
	}
	_, err = fmt.Fprintf(o.Out, "MachineConfig/%s deleted. The Machine Config Operator now drains and reboots the masters one at a time to remove\n"+
		"the script and its units; snapshots already taken stay on the node.\n", o.Name)
	return err
}

func newScheduleManagementCommand(stdout io.Writer) *cli.Command {
	o := &ScheduleManagementOptions{Out: stdout}
	return &cli.Command{
		Name:  "management",
		Usage: "back up the management cluster's own etcd: render, apply or delete a MachineConfig with a systemd timer",
		Description: `Renders the MachineConfig (role master) that makes one master of an OpenShift
management cluster take etcd backups with OpenShift's cluster-backup.sh on a
systemd timer, as YAML on stdout, or applies it with --apply:

  hcpsnap schedule management --host master-0 --on-calendar "*-*-* 02:00:00" \
    --time-zone Europe/Paris --keep 7 --apply

It holds an Ignition 3.2.0 config (OpenShift 4.7 and later) with
  - the snapshot script at ` + management.ScriptPath + ` (mode 0755);
  - ` + management.ServiceName + ` (Type=oneshot; HOST, TGT_DIR, KEEP in its
    Environment= lines): each run writes one folder under --target-dir and
    keeps the newest --keep complete backups;
  - ` + management.TimerName + ` (OnCalendar= with the time zone,
    Persistent=true, WantedBy=timers.target), enabled.

Every master gets it (a pool cannot target one node); the script exits at
once on every node but --host. --on-calendar is checked as systemd parses it,
and the next runs are shown. --apply checks that --host is a master, sends a
server-side dry run first, then applies; the Machine Config Operator then
drains and reboots the masters one at a time. A same-named MachineConfig
without the label ` + management.LabelManagedBy + `=` + management.ManagedBy + ` is never changed or deleted.
Copy the snapshots off the node with hcpsnap pull-node.`,
		Flags:        o.flags(),
		Action:       action(o, &o.Global),
		OnUsageError: usageError,
	}
}
