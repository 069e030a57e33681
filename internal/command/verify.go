package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"

	"github.com/hcpsnap/hcpsnap/drill"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/restore"
	"github.com/hcpsnap/hcpsnap/s3"
)

// Flag names of `hcpsnap verify`.
const (
	FlagDrill      = "drill"
	FlagScratchDir = "scratch-dir"
)

// VerifyOptions are the options of `hcpsnap verify`.
type VerifyOptions struct {
	From       string
	Cluster    string
	Latest     bool
	Prefix     string
	Drill      bool
	ScratchDir string
	KeyFile    string
	S3         S3Options

	Global *GlobalOptions
	Out    io.Writer
	ErrOut io.Writer

	manifestKey string
	store       restore.Store
	// drill runs one drill; nil means drill.Run.
	drill func(ctx context.Context, store restore.Store, b *restore.Backup, opts drill.Options) (*drill.Result, error)
}

func (o *VerifyOptions) flags() []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: FlagFrom, Sources: cli.EnvVars(env(FlagFrom)), Destination: &o.From,
			Usage: "The backup to verify: s3://BUCKET/KEY of its manifest.json (or of its snapshot.db beside it)."},
		&cli.StringFlag{Name: FlagCluster, Sources: cli.EnvVars(env(FlagCluster)), Destination: &o.Cluster,
			Usage: "The backed-up cluster whose newest backup is verified. Without --from and --cluster, the newest backup of every cluster under --prefix is."},
		&cli.BoolFlag{Name: FlagLatest, Destination: &o.Latest,
			Usage: "Verify the newest backup (of --cluster, or of every cluster); the default without --from."},
		&cli.StringFlag{Name: FlagPrefix, Value: "backups", Sources: cli.EnvVars(env(FlagPrefix)), Destination: &o.Prefix,
			Usage: "Key prefix of the backups, as given to hcpsnap backup."},
		&cli.BoolFlag{Name: FlagDrill, Sources: cli.EnvVars(env(FlagDrill)), Destination: &o.Drill,
			Usage: "Restore the snapshot into a scratch folder with etcd's own restore code, start an etcd on loopback on it and check its contents and that the key bundle decrypts its Secrets. Without it, only the manifest and the snapshot object's size and run are checked."},
		&cli.StringFlag{Name: FlagScratchDir, Value: os.TempDir(), Sources: cli.EnvVars(env(FlagScratchDir)), Destination: &o.ScratchDir,
			Usage: "Folder for the drill's scratch data (about twice the snapshot's size); it is always removed."},
		&cli.StringFlag{Name: FlagKeyFile, Sources: cli.EnvVars(env(FlagKeyFile)), Destination: &o.KeyFile,
			Usage: "Key bundle file, for a backup made with --key-out (or a copy of the bundle); with --from or --cluster only."},
	}
	return append(f, o.S3.flags(true)...)
}

// Validate checks the options without any I/O.
func (o *VerifyOptions) Validate() error {
	switch {
	case o.From != "" && o.Latest:
		return exitcode.Usagef("--%s and --%s name the backup twice: keep one", FlagFrom, FlagLatest)
	case o.KeyFile != "" && o.From == "" && o.Cluster == "":
		return exitcode.Usagef("--%s belongs to one backup: name it with --%s or --%s NAME --%s", FlagKeyFile, FlagFrom, FlagCluster, FlagLatest)
	}
	if o.From != "" {
		// --from names the backup; a --cluster from the environment
		// (HCPSNAP_CLUSTER) does not narrow it, as with restore.
		o.Cluster = ""
	}
	bucket, manifestKey, err := backupRef(o.Cluster, o.From)
	if err != nil {
		return err
	}
	if o.From != "" {
		o.S3.Bucket, o.manifestKey = bucket, manifestKey
	}
	if o.S3.Bucket == "" {
		return exitcode.Usagef("--%s is required (or %s), unless --%s names the backup", FlagBucket, env(FlagBucket), FlagFrom)
	}
	if o.Drill && o.ScratchDir == "" {
		return exitcode.Usagef("--%s is empty: name a folder for the drill's scratch data", FlagScratchDir)
	}
	if o.Global.Output == OutputMarkdown {
		return exitcode.Usagef("--output markdown is the format of a backup dry run; use text or json")
	}
	return o.S3.validate()
}

// Complete opens the bucket and checks the scratch folder.
func (o *VerifyOptions) Complete(ctx context.Context) error {
	if o.Drill {
		if fi, err := os.Stat(o.ScratchDir); err != nil || !fi.IsDir() {
			return exitcode.Preconditionf("--%s %s is not a folder: create it or name another", FlagScratchDir, o.ScratchDir)
		}
	}
	store, err := o.S3.open(ctx)
	if err != nil {
		return err
	}
	o.store = store
	return nil
}

// verifyOutcome is one backup's verification, as printed.
type verifyOutcome struct {
	MessageType string        `json:"message_type"`
	Manifest    string        `json:"manifest"`
	Cluster     string        `json:"cluster,omitempty"`
	Drill       bool          `json:"drill"`
	OK          bool          `json:"ok"`
	ExitCode    int           `json:"exitCode"`
	Error       string        `json:"error,omitempty"`
	Result      *drill.Result `json:"result,omitempty"`
	// Shards are the checks of the backup's etcd shard snapshots, each on
	// its own; OK and ExitCode above include them.
	Shards []shardOutcome `json:"shards,omitempty"`
}

// shardOutcome is the verification of one etcd shard's snapshot.
type shardOutcome struct {
	Shard    string        `json:"shard"`
	Snapshot string        `json:"snapshot"`
	OK       bool          `json:"ok"`
	ExitCode int           `json:"exitCode"`
	Error    string        `json:"error,omitempty"`
	Result   *drill.Result `json:"result,omitempty"`
}

// Run verifies the chosen backups, each on its own, and ends with the
// worst outcome: unusable (7) before key mismatch (8) before a
// precondition (3).
func (o *VerifyOptions) Run(ctx context.Context) error {
	backups, err := o.backups(ctx)
	if err != nil {
		return err
	}
	var outcomes []verifyOutcome
	for _, b := range backups {
		out := o.verifyOne(ctx, b)
		if ctx.Err() != nil {
			return exitcode.New(exitcode.Interrupted, fmt.Errorf("verify interrupted; the scratch data was removed: %w", ctx.Err()))
		}
		outcomes = append(outcomes, out)
		if err := o.print(out); err != nil {
			return err
		}
	}
	return summarize(outcomes)
}

// backups resolves --from, --cluster --latest, or every cluster's newest.
func (o *VerifyOptions) backups(ctx context.Context) ([]*restore.Backup, error) {
	if o.manifestKey != "" {
		b, err := restore.Load(ctx, o.store, o.manifestKey)
		if err != nil {
			// A backup whose manifest cannot be read cannot be restored.
			out := verifyOutcome{MessageType: "verify", Manifest: "s3://" + o.S3.Bucket + "/" + o.manifestKey, Drill: o.Drill,
				ExitCode: int(exitcode.Unusable), Error: oneLineError(err)}
			if perr := o.print(out); perr != nil {
				return nil, perr
			}
			return nil, exitcode.New(exitcode.Unusable, err)
		}
		return []*restore.Backup{b}, nil
	}
	all, skipped, err := restore.List(ctx, o.store, o.Prefix, o.Cluster)
	if err != nil {
		return nil, exitcode.New(exitcode.Precondition, s3.Explain(err, o.S3.Bucket))
	}
	warnUnreadable(ctx, o.S3.Bucket, skipped)
	if len(all) == 0 {
		of := "any cluster"
		if o.Cluster != "" {
			of = "cluster " + o.Cluster
		}
		return nil, exitcode.Preconditionf("no readable backup of %s under s3://%s/%s/: check --%s, --%s and --%s", of, o.S3.Bucket, o.Prefix, FlagBucket, FlagPrefix, FlagCluster)
	}
	// List is newest first: the first of each cluster is its newest.
	seen := map[string]bool{}
	var out []*restore.Backup
	for _, b := range all {
		if c := clusterOf(b); !seen[c] {
			seen[c] = true
			out = append(out, b)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return clusterOf(out[i]) < clusterOf(out[j]) })
	return out, nil
}

// verifyOne checks one backup: the manifest and the snapshot object, and
// with --drill the whole restore; then each etcd shard's snapshot the same
// way, each on its own. The outcome is the worst of them.
func (o *VerifyOptions) verifyOne(ctx context.Context, b *restore.Backup) verifyOutcome {
	out := verifyOutcome{MessageType: "verify", Manifest: "s3://" + o.S3.Bucket + "/" + b.ManifestKey, Drill: o.Drill}
	out.Cluster = clusterOf(b)
	if o.Drill {
		o.printDrillPlan(ctx, b, out)
	}
	var code exitcode.Code
	var err error
	code, out.Result, err = o.verifySnapshot(ctx, b, out.Cluster)
	if err != nil {
		out.ExitCode, out.Error = int(code), oneLineError(err)
	}
	for i, sh := range b.Manifest.Shards {
		if ctx.Err() != nil {
			break
		}
		shard := &restore.Backup{ManifestKey: b.ManifestKey, Manifest: b.Manifest.ForShard(i)}
		so := shardOutcome{Shard: sh.Name, Snapshot: "s3://" + o.S3.Bucket + "/" + sh.Snapshot.Key, OK: true}
		scode, res, err := o.verifySnapshot(ctx, shard, out.Cluster+" shard "+sh.Name)
		so.Result = res
		if err != nil {
			so.OK, so.ExitCode, so.Error = false, int(scode), oneLineError(err)
			if worseOutcome(scode, exitcode.Code(out.ExitCode)) {
				out.ExitCode = int(scode)
			}
			if out.Error == "" {
				out.Error = "etcd shard " + sh.Name + ": " + so.Error
			}
		}
		out.Shards = append(out.Shards, so)
	}
	out.OK = out.ExitCode == 0 && out.Error == ""
	return out
}

// printDrillPlan says, before a drill starts, what it needs: the scratch
// space of its largest snapshot (the snapshots are drilled one after the
// other, each scratch folder removed before the next) and the time of all.
func (o *VerifyOptions) printDrillPlan(ctx context.Context, b *restore.Backup, out verifyOutcome) {
	need := drill.Estimate(b.Manifest)
	for i := range b.Manifest.Shards {
		sn := drill.Estimate(b.Manifest.ForShard(i))
		need.Bytes = max(need.Bytes, sn.Bytes)
		need.Duration += sn.Duration
	}
	need.Seconds = need.Duration.Seconds()
	free, _ := drill.FreeSpace(o.ScratchDir)
	shards := ""
	if n := len(b.Manifest.Shards); n > 0 {
		shards = fmt.Sprintf(" and its %d etcd shard snapshots", n)
	}
	log.FromContext(ctx).Info("restore drill", "cluster", out.Cluster, "manifest", out.Manifest, "shards", len(b.Manifest.Shards),
		"scratchMiB", need.Bytes>>20, "freeMiB", free>>20, "scratchDir", o.ScratchDir, "estimate", need.Duration.String())
	if o.Global.Output == OutputJSON {
		_ = json.NewEncoder(o.Out).Encode(map[string]any{"message_type": "drill_plan", "cluster": out.Cluster, "manifest": out.Manifest,
			"shardSnapshots": len(b.Manifest.Shards), "scratchDir": o.ScratchDir, "needBytes": need.Bytes, "freeBytes": free, "estimateSeconds": need.Seconds})
		return
	}
	fmt.Fprintf(o.Out, "drill of %s (%s)%s: needs about %d MiB in %s (%d MiB free) and about %s\n", out.Cluster, out.Manifest, shards, need.Bytes>>20, o.ScratchDir, free>>20, need.Duration)
}

// verifySnapshot checks the snapshot b's manifest describes (a shard's,
// through manifest.ForShard): its object without --drill, the whole
// restore with it. name says whose snapshot it is in the progress lines.
func (o *VerifyOptions) verifySnapshot(ctx context.Context, b *restore.Backup, name string) (exitcode.Code, *drill.Result, error) {
	if !o.Drill {
		if err := restore.CheckSnapshot(ctx, o.store, b); err != nil {
			return exitcode.Unusable, nil, err
		}
		return exitcode.OK, nil, nil
	}
	logger := log.FromContext(ctx)
	opts := drill.Options{ScratchDir: o.ScratchDir, Logger: etcdLogger(o.ErrOut),
		Progress: func(phase string) { logger.Info("drill", "step", phase, "cluster", name) }}
	opts.KeyBundle, opts.NoKeyBundle = o.keyBundle(ctx, b)
	run := o.drill
	if run == nil {
		run = drill.Run
	}
	res, err := run(ctx, o.store, b, opts)
	switch {
	case err == nil:
		return exitcode.OK, res, nil
	case errors.Is(err, drill.ErrNoSpace):
		return exitcode.Precondition, res, err
	case errors.Is(err, drill.ErrUnusable):
		return exitcode.Unusable, res, err
	case errors.Is(err, drill.ErrKeyMismatch):
		return exitcode.KeyMismatch, res, err
	}
	return exitcode.Of(err), res, err
}

// worseOutcome reports whether code a is worse than b: unusable (7) before
// key mismatch (8) before a precondition (3) before anything else but 0.
func worseOutcome(a, b exitcode.Code) bool {
	rank := map[exitcode.Code]int{exitcode.OK: -1, exitcode.Unusable: 4, exitcode.KeyMismatch: 3, exitcode.Precondition: 2}
	ra, ok := rank[a]
	if !ok {
		ra = 1
	}
	rb, ok := rank[b]
	if !ok {
		rb = 1
	}
	return ra > rb
}

// keyBundle reads the backup's key bundle; without one it says why.
func (o *VerifyOptions) keyBundle(ctx context.Context, b *restore.Backup) ([]corev1.Secret, string) {
	kb := b.Manifest.KeyBundle
	if o.KeyFile == "" && kb.Key == "" && kb.File == "" {
		return nil, "the backup has no key bundle (the manifest names none)"
	}
	secrets, err := restore.KeyBundle(ctx, o.store, b, o.KeyFile)
	if err != nil {
		return nil, oneLineError(err)
	}
	return secrets, ""
}

// etcdLogger passes the embedded etcd's errors to stderr and drops the
// rest: its info lines would bury the report.
func etcdLogger(w io.Writer) *zap.Logger {
	if w == nil {
		return zap.NewNop()
	}
	enc := zapcore.NewConsoleEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.ErrorLevel)).Named("etcd")
}

// print writes one outcome: an NDJSON line with -o json, else a report.
func (o *VerifyOptions) print(out verifyOutcome) error {
	if o.Global.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(out)
	}
	_, err := io.WriteString(o.Out, renderOutcome(out))
	return err
}

// renderOutcome is the text report of one backup's verification.
func renderOutcome(out verifyOutcome) string {
	var b strings.Builder
	what := "check"
	if out.Drill {
		what = "drill"
	}
	name := out.Cluster
	if name == "" {
		name = out.Manifest
	}
	fmt.Fprintf(&b, "%s %s: %s\n", what, name, verdictText(out.OK, out.ExitCode))
	fmt.Fprintf(&b, "  manifest   %s\n", out.Manifest)
	writeResult(&b, "  ", out.Result)
	for _, sh := range out.Shards {
		fmt.Fprintf(&b, "  shard %s: %s\n", sh.Shard, verdictText(sh.OK, sh.ExitCode))
		fmt.Fprintf(&b, "    snapshot   %s\n", sh.Snapshot)
		writeResult(&b, "    ", sh.Result)
		if sh.Error != "" {
			fmt.Fprintf(&b, "    error      %s\n", sh.Error)
		}
	}
	if out.Error != "" {
		fmt.Fprintf(&b, "  error      %s\n", out.Error)
	}
	return b.String()
}

// verdictText is a verification's verdict as the report says it.
func verdictText(ok bool, code int) string {
	if ok {
		return "OK"
	}
	return fmt.Sprintf("FAILED (exit %d)", code)
}

// writeResult writes a drill's checks, contents, findings and etcd, each
// line after indent; nothing for a check without a drill (r nil).
func writeResult(b *strings.Builder, indent string, r *drill.Result) {
	if r == nil {
		return
	}
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(b, "%s%s %-9s %s\n", indent, mark, c.Name, c.Detail)
	}
	if c := r.Contents; c != nil {
		fmt.Fprintf(b, "%sresources  %s\n", indent, formatCounts(c.Resources))
		fmt.Fprintf(b, "%snamespaces %d: %s\n", indent, len(c.Namespaces), strings.Join(c.Namespaces, ", "))
	}
	for _, f := range r.Findings {
		fmt.Fprintf(b, "%snote       %s\n", indent, f)
	}
	if r.ClientURL != "" {
		fmt.Fprintf(b, "%setcd       %s restored and served on %s (peer %s), %.1fs, scratch removed\n", indent, r.EtcdVersion, r.ClientURL, r.PeerURL, r.Duration)
	}
}

// formatCounts lists counts by name, largest first.
func formatCounts(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, m[n])
	}
	return strings.Join(parts, " ")
}

// summarize ends the run with the worst outcome's code.
func summarize(outcomes []verifyOutcome) error {
	rank := map[int]int{int(exitcode.Unusable): 4, int(exitcode.KeyMismatch): 3, int(exitcode.Precondition): 2}
	worst, failed := exitcode.OK, 0
	for _, out := range outcomes {
		if out.OK {
			continue
		}
		failed++
		if rank[out.ExitCode] > rank[int(worst)] || worst == exitcode.OK {
			worst = exitcode.Code(out.ExitCode)
		}
	}
	if failed == 0 {
		return nil
	}
	if failed == 1 && len(outcomes) == 1 {
		return exitcode.New(worst, errors.New(outcomes[0].Error))
	}
	return exitcode.New(worst, fmt.Errorf("%d of %d backups failed verification (see the report)", failed, len(outcomes)))
}

func newVerifyCommand(stdout, stderr io.Writer) *cli.Command {
	o := &VerifyOptions{Out: stdout, ErrOut: stderr}
	return &cli.Command{
		Name:  "verify",
		Usage: "check that stored backups are whole and, with --drill, that they restore and their key bundle decrypts their Secrets",
		Description: "Without --drill: reads each backup's manifest and checks that its snapshot object is present with the size and run the manifest records. " +
			"With --drill: streams the snapshot into a scratch folder checking its size and SHA-256, restores it with etcd's own restore code as HyperShift's etcd-init does " +
			"(--bump-revision 1000000000 --mark-compacted), starts an etcd on 127.0.0.1 on the result, and reports the revision and keys against the manifest, the objects per resource, " +
			"the namespaces, and whether the key bundle's AES key decrypts every aescbc-encrypted Secret (no value is ever printed). The scratch data is always removed. " +
			"Exit codes: 7 a backup is unusable, 8 its key bundle does not decrypt its Secrets, 3 not enough scratch space.",
		Flags:  o.flags(),
		Action: action(o, &o.Global),
	}
}
