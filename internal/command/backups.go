package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
	"github.com/hcpsnap/hcpsnap/s3"
)

// BackupsOptions are the options of `hcpsnap backups`.
type BackupsOptions struct {
	Cluster string
	// Management lists the management cluster's own backups (pull-node).
	Management bool
	Prefix     string
	S3         S3Options
	Global     *GlobalOptions
	Out        io.Writer

	store restore.Store
}

// Validate checks the options without any I/O.
func (o *BackupsOptions) Validate() error {
	if errs := validation.IsDNS1123Label(o.Cluster); o.Cluster != "" && len(errs) > 0 {
		return exitcode.Usagef("--%s %q is not a valid Kubernetes name: %s", FlagCluster, o.Cluster, errs[0])
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
	return o.S3.validate()
}

// Complete opens the bucket.
func (o *BackupsOptions) Complete(ctx context.Context) error {
	store, err := o.S3.open(ctx)
	if err != nil {
		return err
	}
	o.store = store
	return nil
}

// Run lists the backups, newest first; without --cluster, those of every
// cluster, grouped by cluster (namespace/name, as each manifest records it)
// and newest first within each.
func (o *BackupsOptions) Run(ctx context.Context) error {
	series := o.Cluster
	if o.Management {
		series = manifest.ManagementSeries
	}
	backups, skipped, err := restore.List(ctx, o.store, o.Prefix, series)
	if err != nil {
		return exitcode.New(exitcode.Precondition, s3.Explain(err, o.S3.Bucket))
	}
	warnUnreadable(ctx, o.S3.Bucket, skipped)
	// A management backup is dated by its snapshot (the node folder's
	// time), not by when pull-node copied it.
	sort.SliceStable(backups, func(i, j int) bool { return backupTime(backups[i]).After(backupTime(backups[j])) })
	if o.Management {
		return o.writeManagement(backups)
	}
	// Backups live under <prefix>/<name>/, so two HostedClusters of one
	// name in two namespaces share a folder: the CLUSTER column, with the
	// namespace, tells them apart whenever a listing holds more than one.
	clusters := map[string]bool{}
	for _, b := range backups {
		clusters[clusterOf(b)] = true
	}
	sort.SliceStable(backups, func(i, j int) bool { return clusterOf(backups[i]) < clusterOf(backups[j]) })
	withCluster := o.Cluster == "" || len(clusters) > 1
	if o.Global.Output == OutputJSON {
		return o.writeJSON(backups)
	}
	if len(backups) == 0 {
		of := o.Cluster
		if of == "" {
			of = "any cluster"
		}
		_, err := fmt.Fprintf(o.Out, "no backups of %s under s3://%s/%s/\n", of, o.S3.Bucket, o.Prefix)
		return err
	}
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	if withCluster {
		fmt.Fprint(w, "CLUSTER\t")
	}
	fmt.Fprintln(w, "TIME\tREVISION\tKEYS\tSIZE\tDOWNTIME\tKEY BUNDLE\tMANIFEST")
	for _, b := range backups {
		if withCluster {
			fmt.Fprintf(w, "%s\t", checkpoint.OneLine(clusterOf(b)))
		}
		m := b.Manifest
		bundle := "bucket"
		if m.KeyBundle.File != "" {
			bundle = "local file"
		}
		downtime := fmt.Sprintf("%.1fs", m.DowntimeSeconds)
		if m.IsManagement() {
			bundle, downtime = "none (management)", "-"
		}
		// A streamed snapshot's keys are not counted (manifest.Etcd).
		keys := "-"
		if m.Etcd.TotalKeys > 0 {
			keys = strconv.FormatInt(m.Etcd.TotalKeys, 10)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%.1f MiB\t%s\t%s\ts3://%s/%s\n", backupTime(b).UTC().Format(time.RFC3339), m.Etcd.Revision,
			keys, float64(m.Snapshot.Size)/(1<<20), downtime, bundle, o.S3.Bucket, b.ManifestKey)
	}
	return w.Flush()
}

// clusterOf is the cluster a backup's manifest names, namespace/name, or
// "management" for the management cluster's own backups.
func clusterOf(b *restore.Backup) string {
	if b.Manifest.IsManagement() {
		return manifest.SourceManagement
	}
	return b.Manifest.Namespace + "/" + b.Manifest.Cluster
}

// backupTime is when a backup's snapshot was taken, as far as the manifest
// says: a management backup's node folder time, a HostedCluster backup's
// end.
func backupTime(b *restore.Backup) time.Time {
	if b.Manifest.IsManagement() {
		return b.Manifest.Times.Started
	}
	return b.Manifest.Times.Finished
}

// writeJSON writes one NDJSON line per backup.
func (o *BackupsOptions) writeJSON(backups []*restore.Backup) error {
	enc := json.NewEncoder(o.Out)
	for _, b := range backups {
		m := b.Manifest
		line := map[string]any{
			"message_type": "backup", "manifest": "s3://" + o.S3.Bucket + "/" + b.ManifestKey,
			"cluster": clusterOf(b), "time": backupTime(b), "revision": m.Etcd.Revision,
			"totalKeys": m.Etcd.TotalKeys, "via": m.Via, "bytes": m.Snapshot.Size, "sha256": m.Snapshot.SHA256,
			"online": m.Online, "downtimeSeconds": m.DowntimeSeconds, "keyBundle": m.KeyBundle.Key != "" || m.KeyBundle.File != "",
		}
		if m.IsManagement() {
			line["source"], line["node"] = m.Source, m.Node
			if m.StaticResources != nil {
				line["staticResources"] = "s3://" + o.S3.Bucket + "/" + m.StaticResources.Key
			}
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// writeManagement lists the management cluster's own backups: when, from
// which node, the etcd revision and size.
func (o *BackupsOptions) writeManagement(backups []*restore.Backup) error {
	if o.Global.Output == OutputJSON {
		return o.writeJSON(backups)
	}
	if len(backups) == 0 {
		_, err := fmt.Fprintf(o.Out, "no management cluster backups under s3://%s/%s/%s/ (hcpsnap pull-node copies them)\n", o.S3.Bucket, o.Prefix, manifest.ManagementSeries)
		return err
	}
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tNODE\tREVISION\tSIZE\tMANIFEST")
	for _, b := range backups {
		m := b.Manifest
		fmt.Fprintf(w, "%s\t%s\t%d\t%.1f MiB\ts3://%s/%s\n", backupTime(b).UTC().Format(time.RFC3339), checkpoint.OneLine(m.Node),
			m.Etcd.Revision, float64(m.Snapshot.Size)/(1<<20), o.S3.Bucket, b.ManifestKey)
	}
	return w.Flush()
}

// warnUnreadable names each manifest a listing skipped: the backup it
// describes is not offered, and a person should know why.
func warnUnreadable(ctx context.Context, bucket string, skipped []restore.Unreadable) {
	for _, u := range skipped {
		log.FromContext(ctx).Warn("skipped an unreadable backup manifest", "manifest", "s3://"+bucket+"/"+checkpoint.OneLine(u.Key), "err", oneLineError(u.Err))
	}
}

func newBackupsCommand(stdout io.Writer) *cli.Command {
	o := &BackupsOptions{Out: stdout}
	return &cli.Command{
		Name:        "backups",
		Usage:       "list the backups of a cluster, or of every cluster, newest first",
		Description: "Reads the manifests under <prefix>/<cluster>/ in the bucket (under <prefix>/ without --cluster): time, etcd revision, keys, size, downtime and manifest URL. Without --cluster, every cluster's backups are listed, grouped by cluster (namespace/name, as the manifest records it), newest first within each.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: FlagCluster, Sources: cli.EnvVars(env(FlagCluster)), Destination: &o.Cluster,
				Usage: "Name of the backed-up HostedCluster; without it (and without --management), the backups of every cluster under --prefix are listed, the management cluster's as \"management\"."},
			&cli.BoolFlag{Name: FlagManagement, Sources: cli.EnvVars(env(FlagManagement)), Destination: &o.Management,
				Usage: "List the management cluster's own etcd backups, which hcpsnap pull-node copied: time, node, revision, size."},
			&cli.StringFlag{Name: FlagPrefix, Value: "backups", Sources: cli.EnvVars(env(FlagPrefix)), Destination: &o.Prefix,
				Usage: "Key prefix of the backups, as given to hcpsnap backup."},
		}, o.S3.flags(true)...),
		Action: action(o, &o.Global),
	}
}
