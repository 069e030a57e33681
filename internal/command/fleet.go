package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/steps"
)

// Flag names of a fleet backup.
const (
	FlagSelector      = "selector"
	FlagAllNamespaces = "all-namespaces"
	FlagParallel      = "parallel"
)

// fleetHelp is the part of `backup --help` about fleets.
const fleetHelp = `FLEETS: --selector L (HostedClusters of --namespace whose labels match L) or
--all-namespaces (with or without --selector) backs up many clusters, each
exactly as --cluster would: its own run, lock, run file and undo. At most
--parallel N run at once (default 1), so never more than N control planes are
down together. One failure does not stop the others; Ctrl-C starts no new
one and undoes the running ones. Two selected clusters of one name in two
namespaces are refused (their backups would share <prefix>/<name>/). The
summary has one line per cluster (-o json: every event carries its cluster,
then one cluster_result object per cluster). Exit 0 when every backup
succeeded, 6 when any failed or was refused (also when all did), 5 when any
needs manual action, 130 after Ctrl-C; a selector matching nothing is exit 3.
--resume and --abandon take one --cluster.`

// maxParallel bounds --parallel: each backup holds its own upload buffers.
const maxParallel = 64

// FleetOptions select the HostedClusters of a fleet backup: every one that
// matches Selector in --namespace, or in every namespace with
// AllNamespaces. Each is backed up exactly as `backup --cluster` would be,
// with its own run, lock and undo, at most Parallel at once.
type FleetOptions struct {
	Selector      string
	AllNamespaces bool
	Parallel      int
}

func (f *FleetOptions) flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: FlagSelector, Aliases: []string{"l"}, Sources: cli.EnvVars(env(FlagSelector)), Destination: &f.Selector,
			Usage: "Back up every HostedCluster of --namespace whose labels match this selector (kubectl's syntax, e.g. env=prod,tier!=dev) instead of one --cluster: a fleet. Each cluster has its own run, lock and undo; one failure does not stop the others."},
		&cli.BoolFlag{Name: FlagAllNamespaces, Aliases: []string{"A"}, Sources: cli.EnvVars(env(FlagAllNamespaces)), Destination: &f.AllNamespaces,
			Usage: "Back up the HostedClusters of every namespace (those matching --selector, if given) instead of one --cluster: a fleet. --namespace is then ignored."},
		&cli.IntFlag{Name: FlagParallel, Value: 1, Sources: cli.EnvVars(env(FlagParallel)), Destination: &f.Parallel,
			Usage: "In a fleet, how many clusters are backed up at once: never more than this many control planes are down together (1 to 64)."},
	}
}

// selected reports whether a fleet was asked for.
func (f *FleetOptions) selected() bool { return f.Selector != "" || f.AllNamespaces }

// validateFleet checks the fleet flags and what they exclude, without I/O.
func (o *BackupOptions) validateFleet() error {
	what := "--" + FlagSelector
	if o.Fleet.AllNamespaces {
		what = "--" + FlagAllNamespaces
	}
	switch {
	case o.Cluster != "":
		return exitcode.Usagef("--%s and %s exclude each other: back up one cluster by name, or a fleet by selector (unset %s if it is set)", FlagCluster, what, env(FlagCluster))
	case o.Resume:
		return exitcode.Usagef("--%s and %s exclude each other: resume each unfinished run with --%s NAME --%s", FlagResume, what, FlagCluster, FlagResume)
	case o.Abandon:
		return exitcode.Usagef("--%s and %s exclude each other: abandon each unfinished run with --%s NAME --%s", FlagAbandon, what, FlagCluster, FlagAbandon)
	case o.KeyOut != "":
		return exitcode.Usagef("--%s and %s exclude each other: the key bundles of a fleet go to the bucket, one per cluster", FlagKeyOut, what)
	case o.Fleet.Parallel < 1 || o.Fleet.Parallel > maxParallel:
		return exitcode.Usagef("--%s %d is out of range: use 1 to %d", FlagParallel, o.Fleet.Parallel, maxParallel)
	}
	if _, err := labels.Parse(o.Fleet.Selector); err != nil {
		return exitcode.Usagef("--%s %q is not a label selector: %s", FlagSelector, o.Fleet.Selector, oneLineError(err))
	}
	return nil
}

// withValidName returns the options to validate: a fleet has no --cluster
// yet, so a name that passes stands in for the clusters it will list (each
// a valid Kubernetes name, as the API server ensures).
func (o *BackupOptions) withValidName() (opts steps.Options) {
	opts = o.Options
	if o.Fleet.selected() {
		opts.Cluster = "fleet"
	}
	return opts
}

// fleetResult is what became of one cluster of a fleet.
type fleetResult struct {
	Cluster kube.HostedClusterRef
	// Summary is the summary of a backup that succeeded.
	Summary *Summary
	// Err is why the backup failed, was refused or did not start.
	Err error
	// Started is false for a cluster whose backup never began (refused, or
	// Ctrl-C came first).
	Started bool
}

func (r fleetResult) code() exitcode.Code { return exitcode.Of(r.Err) }

// result is the one-word outcome shown in the summary.
func (r fleetResult) result() string {
	switch {
	case r.Err == nil:
		return "succeeded"
	case r.Summary != nil:
		// The backup completed; what failed after it is its --prune.
		return "succeeded, prune failed"
	case !r.Started && r.code() == exitcode.Interrupted:
		return "not-started"
	case !r.Started:
		return "refused"
	case r.code() == exitcode.ManualAction:
		return "manual-action"
	case r.code() == exitcode.Interrupted:
		return "interrupted"
	}
	return "failed"
}

// runFleet lists the selected HostedClusters and backs each one up through
// the single-cluster path, at most Parallel at once.
func (o *BackupOptions) runFleet(ctx context.Context) error {
	namespace := o.Namespace
	if o.Fleet.AllNamespaces {
		namespace = ""
	}
	clusters, err := o.hyper.ListHostedClusters(ctx, namespace, o.Fleet.Selector)
	if apierrors.IsForbidden(err) {
		where, binding := "in namespace "+namespace, "a RoleBinding there"
		if namespace == "" {
			where, binding = "in every namespace", "a ClusterRoleBinding"
		}
		return exitcode.Preconditionf("list HostedClusters %s: forbidden: a fleet needs the list verb of deploy/rbac.yaml's hcpsnap-backup role through %s", where, binding)
	}
	if err != nil {
		return exitcode.New(exitcode.Precondition, fmt.Errorf("list HostedClusters: %w", err))
	}
	if len(clusters) == 0 {
		return exitcode.Preconditionf("no HostedCluster %s: nothing to back up; check the selector (kubectl get hostedclusters %s)", o.fleetScope(), o.kubectlScope())
	}
	sort.Slice(clusters, func(i, j int) bool {
		if clusters[i].Name != clusters[j].Name {
			return clusters[i].Name < clusters[j].Name
		}
		return clusters[i].Namespace < clusters[j].Namespace
	})
	log.FromContext(ctx).Info("fleet backup", "clusters", len(clusters), "selector", o.Fleet.Selector, "namespace", namespaceOrAll(namespace), "parallel", o.Fleet.Parallel)
	if o.DryRun {
		return o.printFleetRunbooks(ctx, clusters)
	}
	// Each running backup holds its own part buffers.
	limitMemory(int64(o.Fleet.Parallel)*o.S3.PartSizeMiB<<20, o.S3.Concurrency)

	refused := sameNames(clusters, o.Prefix)
	// Every cluster's reporter writes to the one stdout, line by line.
	shared, enc := &sync.Mutex{}, json.NewEncoder(o.Out)
	results := backupFleet(ctx, clusters, o.Fleet.Parallel, refused, func(ctx context.Context, c kube.HostedClusterRef) (*Summary, error) {
		one := *o
		one.Fleet = FleetOptions{}
		one.Cluster, one.Namespace = c.Name, c.Namespace
		var sum *Summary
		one.report = newReporter(o.Global.Output, o.Out, o.ErrOut)
		one.report.mu, one.report.enc = shared, enc
		one.report.cluster = c.Namespace + "/" + c.Name
		one.report.onSummary = func(s Summary) { sum = &s }
		ctx = log.WithContext(ctx, log.FromContext(ctx).With("cluster", one.report.cluster))
		// What the run writes itself (the lines of its --prune) is written
		// whole once it ends, so that clusters' tables do not interleave.
		var own bytes.Buffer
		one.Out = &own
		err := one.Run(ctx)
		shared.Lock()
		_, _ = o.Out.Write(own.Bytes())
		shared.Unlock()
		if err == nil && sum == nil {
			return nil, fmt.Errorf("backup of %s ended without a summary", one.report.cluster)
		}
		return sum, err
	})
	if err := writeFleetSummary(o.Out, o.Global.Output, results); err != nil {
		return err
	}
	return fleetError(ctx, results)
}

func (o *BackupOptions) fleetScope() string {
	var parts []string
	if o.Fleet.Selector != "" {
		parts = append(parts, fmt.Sprintf("matches selector %q", o.Fleet.Selector))
	}
	if o.Fleet.AllNamespaces {
		parts = append(parts, "in any namespace")
	} else {
		parts = append(parts, "in namespace "+o.Namespace)
	}
	return strings.Join(parts, " ")
}

func (o *BackupOptions) kubectlScope() string {
	s := "-n " + o.Namespace
	if o.Fleet.AllNamespaces {
		s = "-A"
	}
	if o.Fleet.Selector != "" {
		s += " -l '" + o.Fleet.Selector + "'"
	}
	return s
}

func namespaceOrAll(ns string) string {
	if ns == "" {
		return "(all)"
	}
	return ns
}

// sameNames refuses the clusters whose name another selected cluster has in
// another namespace: backups live under <prefix>/<cluster>/<time>/, so
// theirs would share one folder and could be taken for each other.
func sameNames(clusters []kube.HostedClusterRef, prefix string) map[kube.HostedClusterRef]error {
	byName := map[string][]string{}
	for _, c := range clusters {
		byName[c.Name] = append(byName[c.Name], c.Namespace)
	}
	refused := map[kube.HostedClusterRef]error{}
	for _, c := range clusters {
		if nss := byName[c.Name]; len(nss) > 1 {
			refused[c] = exitcode.Preconditionf("HostedCluster %s/%s has the name of another selected cluster (namespaces %s): their backups would share %s/%s/; back them up apart, each with its own --%s",
				c.Namespace, c.Name, strings.Join(nss, ", "), prefix, c.Name, FlagPrefix)
		}
	}
	return refused
}

// backupFleet backs up clusters in order, at most parallel at once, and
// returns one result per cluster in the same order. A failure does not stop
// the others; the end of ctx (Ctrl-C) stops starting new ones, and the
// running ones undo their changes through their own engines. refused
// clusters are not started.
func backupFleet(ctx context.Context, clusters []kube.HostedClusterRef, parallel int, refused map[kube.HostedClusterRef]error,
	backup func(context.Context, kube.HostedClusterRef) (*Summary, error)) []fleetResult {
	results := make([]fleetResult, len(clusters))
	slots := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, c := range clusters {
		results[i].Cluster = c
		if err := refused[c]; err != nil {
			results[i].Err = err
			continue
		}
		// Wait for a free slot, unless Ctrl-C comes first.
		select {
		case slots <- struct{}{}:
			if ctx.Err() == nil {
				break
			}
			<-slots
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			results[i].Err = exitcode.New(exitcode.Interrupted, fmt.Errorf("not started: %w", context.Cause(ctx)))
			continue
		}
		results[i].Started = true
		wg.Add(1)
		go func(r *fleetResult) {
			defer wg.Done()
			defer func() { <-slots }()
			r.Summary, r.Err = backup(ctx, c)
		}(&results[i])
	}
	wg.Wait()
	return results
}

// fleetError is the fleet's error, whose class is its exit code: 5 when
// any cluster needs a hand, 130 after Ctrl-C, 6 when any backup failed or
// was refused, nil when every one succeeded.
func fleetError(ctx context.Context, results []fleetResult) error {
	var failed, manual []string
	for _, r := range results {
		name := r.Cluster.Namespace + "/" + r.Cluster.Name
		switch {
		case r.Err == nil:
		case r.code() == exitcode.ManualAction:
			manual = append(manual, name)
		default:
			failed = append(failed, name)
		}
	}
	switch {
	case len(manual) > 0:
		return exitcode.New(exitcode.ManualAction, fmt.Errorf("%d of %d clusters need manual action (%s): see each one's error in the summary, then finish with --cluster NAME --resume",
			len(manual), len(results), strings.Join(manual, ", ")))
	case ctx.Err() != nil:
		return exitcode.New(exitcode.Interrupted, fmt.Errorf("fleet backup interrupted: every running backup was undone; %d of %d clusters were not backed up", len(failed), len(results)))
	case len(failed) > 0:
		return exitcode.New(exitcode.Partial, fmt.Errorf("%d of %d clusters' backups failed (%s); the others succeeded; see the summary",
			len(failed), len(results), strings.Join(failed, ", ")))
	}
	return nil
}

// fleetLine is the JSON line of one cluster in a fleet's summary.
type fleetLine struct {
	MessageType     string  `json:"message_type"`
	Cluster         string  `json:"cluster"`
	Result          string  `json:"result"`
	ExitCode        int     `json:"exitCode"`
	RunID           string  `json:"runID,omitempty"`
	DowntimeSeconds float64 `json:"downtimeSeconds"`
	Bytes           int64   `json:"bytes"`
	Manifest        string  `json:"manifest,omitempty"`
	Error           string  `json:"error,omitempty"`
}

func lineOf(r fleetResult) fleetLine {
	l := fleetLine{MessageType: "cluster_result", Cluster: r.Cluster.Namespace + "/" + r.Cluster.Name, Result: r.result(), ExitCode: int(r.code())}
	if s := r.Summary; s != nil {
		l.RunID, l.DowntimeSeconds, l.Bytes, l.Manifest = s.RunID, s.DowntimeSeconds, s.Bytes, s.Manifest
	}
	if r.Err != nil {
		// One line per cluster: an error's own line breaks become spaces.
		l.Error = oneLineError(errors.New(strings.Join(strings.FieldsFunc(r.Err.Error(), func(c rune) bool { return c == '\n' || c == '\r' }), " ")))
	}
	return l
}

// writeFleetSummary writes one line per cluster: a table, or with -o json
// one cluster_result object each.
func writeFleetSummary(out io.Writer, format string, results []fleetResult) error {
	if format == OutputJSON {
		enc := json.NewEncoder(out)
		for _, r := range results {
			if err := enc.Encode(lineOf(r)); err != nil {
				return err
			}
		}
		return nil
	}
	ok := 0
	for _, r := range results {
		if r.Summary != nil { // backed up, even when its --prune failed
			ok++
		}
	}
	fmt.Fprintf(out, "Fleet backup: %d of %d clusters backed up\n", ok, len(results))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTER\tRESULT\tDOWNTIME\tSIZE\tMANIFEST OR ERROR")
	for _, r := range results {
		l := lineOf(r)
		downtime, size, what := "-", "-", l.Error
		if r.Summary != nil {
			downtime = fmt.Sprintf("%.1fs", l.DowntimeSeconds)
			if r.Summary.Online {
				downtime = "none (online)"
			}
			size = fmt.Sprintf("%.1f MiB", float64(l.Bytes)/(1<<20))
			what = l.Manifest
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", l.Cluster, l.Result, downtime, size, what)
	}
	return w.Flush()
}

// printFleetRunbooks prints, for a dry run, the list of clusters and then
// each cluster's runbook, read from its own objects.
func (o *BackupOptions) printFleetRunbooks(ctx context.Context, clusters []kube.HostedClusterRef) error {
	if o.Global.Output == OutputText {
		names := make([]string, len(clusters))
		for i, c := range clusters {
			names[i] = c.Namespace + "/" + c.Name
		}
		fmt.Fprintf(o.Out, "Fleet backup of %d HostedClusters, at most %d at once (dry run: one runbook each below):\n  %s\n\n",
			len(clusters), o.Fleet.Parallel, strings.Join(names, "\n  "))
	}
	for c, err := range sameNames(clusters, o.Prefix) {
		log.FromContext(ctx).Warn("would be refused", "cluster", c.Namespace+"/"+c.Name, "err", oneLineError(err))
	}
	for _, c := range clusters {
		one := *o
		one.Fleet = FleetOptions{}
		one.Cluster, one.Namespace = c.Name, c.Namespace
		if err := one.Run(log.WithContext(ctx, log.FromContext(ctx).With("cluster", c.Namespace+"/"+c.Name))); err != nil {
			return fmt.Errorf("dry run of %s/%s: %w", c.Namespace, c.Name, err)
		}
		if o.Global.Output == OutputText {
			fmt.Fprintln(o.Out)
		}
	}
	return nil
}
