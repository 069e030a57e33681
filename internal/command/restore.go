package command

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/fsutil"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
	"github.com/hcpsnap/hcpsnap/s3"
)

// Flag names of `hcpsnap restore` and `hcpsnap backups`.
const (
	FlagFrom          = "from"
	FlagLatest        = "latest"
	FlagFilename      = "filename"
	FlagOut           = "out"
	FlagHostedCluster = "hosted-cluster"
	FlagURLExpires    = "url-expires"
	FlagKeyFile       = "key-file"
	FlagVerify        = "verify"
	FlagApply         = "apply"
	FlagServerDryRun  = "server-dry-run"
	FlagForce         = "force"
)

// RestoreOptions are the options of `hcpsnap restore`.
type RestoreOptions struct {
	From          string
	Cluster       string
	Latest        bool
	Prefix        string
	Filename      string
	OutFile       string
	HostedCluster string
	URLExpires    time.Duration
	KeyFile       string
	Verify        bool
	Apply         bool
	ServerDryRun  bool
	Force         bool
	S3            S3Options

	Global *GlobalOptions
	In     io.Reader
	Out    io.Writer

	manifestKey string
	store       *s3.Store
	// terminal reports whether In is a terminal; nil means isTerminal.
	terminal func(io.Reader) bool
}

func (o *RestoreOptions) flags() []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: FlagFrom, Sources: cli.EnvVars(env(FlagFrom)), Destination: &o.From,
			Usage: "The backup to restore: s3://BUCKET/KEY of its manifest.json (or of its snapshot.db beside it)."},
		&cli.StringFlag{Name: FlagCluster, Sources: cli.EnvVars(env(FlagCluster)), Destination: &o.Cluster,
			Usage: "With --latest: the backed-up cluster whose newest backup under --prefix in --bucket is restored."},
		&cli.BoolFlag{Name: FlagLatest, Destination: &o.Latest,
			Usage: "Restore the newest backup of --cluster."},
		&cli.StringFlag{Name: FlagPrefix, Value: "backups", Sources: cli.EnvVars(env(FlagPrefix)), Destination: &o.Prefix,
			Usage: "Key prefix of the backups, as given to hcpsnap backup."},
		&cli.StringFlag{Name: FlagFilename, Aliases: []string{"f"}, Value: "-", Sources: cli.EnvVars(env(FlagFilename)), Destination: &o.Filename,
			Usage: "The render of `hypershift create cluster ... --render` (several YAML documents or a List); - reads stdin."},
		&cli.StringFlag{Name: FlagOut, Sources: cli.EnvVars(env(FlagOut)), Destination: &o.OutFile,
			Usage: "Write the result to this file (mode 0600) instead of stdout. It holds a presigned URL and keys: keep it private."},
		&cli.StringFlag{Name: FlagHostedCluster, Sources: cli.EnvVars(env(FlagHostedCluster)), Destination: &o.HostedCluster,
			Usage: "The HostedCluster to patch (name or namespace/name) when the render holds several."},
		&cli.DurationFlag{Name: FlagURLExpires, Value: 24 * time.Hour, Sources: cli.EnvVars(env(FlagURLExpires)), Destination: &o.URLExpires,
			Usage: "Lifetime of the presigned snapshot URL; it must outlast the new cluster's creation (SigV4 allows at most 168h)."},
		&cli.StringFlag{Name: FlagKeyFile, Sources: cli.EnvVars(env(FlagKeyFile)), Destination: &o.KeyFile,
			Usage: "Key bundle file, for a backup made with --key-out (or a copy of the bundle)."},
		&cli.BoolFlag{Name: FlagVerify, Sources: cli.EnvVars(env(FlagVerify)), Destination: &o.Verify,
			Usage: "Download the snapshot through the presigned URL, without credentials as HyperShift's etcd-init does, and check its checksums."},
		&cli.BoolFlag{Name: FlagApply, Sources: cli.EnvVars(env(FlagApply)), Destination: &o.Apply,
			Usage: "Server-side apply the result to the management cluster; refused when that HostedCluster already exists."},
		&cli.BoolFlag{Name: FlagServerDryRun, Sources: cli.EnvVars(env(FlagServerDryRun)), Destination: &o.ServerDryRun,
			Usage: "Validate the result against the live API and CRDs (server-side dry run) without creating anything."},
		&cli.BoolFlag{Name: FlagForce, Sources: cli.EnvVars(env(FlagForce)), Destination: &o.Force,
			Usage: "Replace a restoreSnapshotURL the rendered HostedCluster already has."},
	}
	return append(f, o.S3.flags(true)...)
}

// Validate checks the options without any I/O.
func (o *RestoreOptions) Validate() error {
	switch {
	case o.From != "" && o.Latest:
		return exitcode.Usagef("--%s and --%s name the backup twice: keep one", FlagFrom, FlagLatest)
	case o.From == "" && !o.Latest:
		return exitcode.Usagef("no backup named: pass --%s s3://BUCKET/PREFIX/CLUSTER/TIMESTAMP/manifest.json, or --%s NAME --%s", FlagFrom, FlagCluster, FlagLatest)
	case o.Latest && o.Cluster == "":
		return exitcode.Usagef("--%s needs --%s NAME", FlagLatest, FlagCluster)
	case o.Latest && o.S3.Bucket == "":
		return exitcode.Usagef("--%s needs --%s (or %s)", FlagLatest, FlagBucket, env(FlagBucket))
	}
	bucket, manifestKey, err := backupRef(o.Cluster, o.From)
	if err != nil {
		return err
	}
	if o.From != "" {
		o.S3.Bucket, o.manifestKey = bucket, manifestKey
	}
	if err := o.S3.validate(); err != nil {
		return err
	}
	if o.URLExpires < time.Second || o.URLExpires > 7*24*time.Hour {
		return exitcode.Usagef("--%s %s is out of range: use up to 168h (SigV4's limit), longer than the cluster's creation", FlagURLExpires, o.URLExpires)
	}
	if o.Apply && o.ServerDryRun {
		return exitcode.Usagef("--%s and --%s contradict each other: keep one", FlagApply, FlagServerDryRun)
	}
	if o.Global.Output == OutputMarkdown {
		return exitcode.Usagef("--output markdown is the format of a backup dry run; restore writes YAML (text) or a JSON report (json)")
	}
	if o.Global.Output == OutputJSON && o.OutFile == "" {
		return exitcode.Usagef("-o json prints a JSON report on stdout: name the file for the YAML with --%s", FlagOut)
	}
	return nil
}

// Complete refuses a render to be read from a terminal, then opens the
// bucket.
func (o *RestoreOptions) Complete(ctx context.Context) error {
	if err := o.checkInput(); err != nil {
		return err
	}
	store, err := o.S3.open(ctx)
	if err != nil {
		return err
	}
	o.store = store
	return nil
}

// Run resolves the backup, patches the render and writes it.
func (o *RestoreOptions) Run(ctx context.Context) error {
	logger := log.FromContext(ctx)
	store := o.store
	b, err := o.backup(ctx, store)
	if err != nil {
		return err
	}
	m := b.Manifest
	if m.IsManagement() {
		return exitcode.Preconditionf("%s is a backup of the management cluster's own etcd (node %s), which hcpsnap does not restore: download its %s and %s into one folder under their original names (%s, %s) and run OpenShift's cluster-restore.sh with that folder on a recovery master",
			b.ManifestKey, checkpoint.OneLine(m.Node), manifest.SnapshotObject, manifest.StaticResourcesObject, originalName(m, true), originalName(m, false))
	}
	render, err := o.readRender()
	if err != nil {
		return err
	}
	logger.Info("restoring backup", "cluster", m.Namespace+"/"+m.Cluster, "taken", m.Times.Finished.Format(time.RFC3339),
		"revision", m.Etcd.Revision, "keys", m.Etcd.TotalKeys, "bytes", m.Snapshot.Size)
	if err := restore.CheckSnapshot(ctx, store, b); err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	secrets, err := restore.KeyBundle(ctx, store, b, o.KeyFile)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	if o.URLExpires < time.Hour {
		logger.Warn("the presigned URL expires in less than an hour: a cluster whose etcd starts later cannot restore", "urlExpires", o.URLExpires)
	}
	url, expires, err := store.Presign(ctx, m.Snapshot.Key, o.URLExpires)
	if err != nil {
		return err
	}
	if o.Verify {
		client, err := o.httpClient()
		if err != nil {
			return err
		}
		if err := restore.Verify(ctx, client, url, m); err != nil {
			return exitcode.New(exitcode.Precondition, err)
		}
		logger.Info("verified: the presigned URL serves the backup's snapshot without credentials", "bytes", m.Snapshot.Size)
	}
	out, rep, err := restore.Patch(render, restore.Options{HostedCluster: o.HostedCluster, SnapshotURL: url, Secrets: secrets, Force: o.Force,
		Encryption: m.Encryption, MissingShards: m.MissingShards, Shards: m.Shards})
	if err != nil {
		return exitcode.New(exitcode.Usage, fmt.Errorf("%s: %w", o.renderName(), err))
	}
	if o.Apply || o.ServerDryRun {
		if err := o.applyResult(ctx, out, rep.HostedCluster); err != nil {
			return err
		}
	}
	if err := o.writeOutput(out); err != nil {
		return err
	}
	logger.Info("HostedCluster patched", "hostedCluster", rep.HostedCluster, "restoreSnapshotURL", "set (presigned, not shown)",
		"urlExpires", expires.UTC().Format(time.RFC3339))
	if rep.Encryption == manifest.EncryptionKMS {
		logger.Info("KMS encryption kept as rendered: it names every key the backed-up data needs; no AES key added",
			"provider", rep.KMSProvider, "keys", strings.Join(rep.KMSKeys, ","))
	} else {
		logger.Info("encryption key", "secret", rep.EncryptionSecret, "action", rep.EncryptionKeyAction)
	}
	if rep.EncryptionKeyAction == restore.KeyReplaced {
		logger.Warn("the render's AES key was replaced by the backed-up one", "secret", rep.EncryptionSecret)
	}
	for _, s := range rep.AddedSecrets {
		logger.Info("added Secret from the key bundle", "secret", s)
	}
	for _, w := range rep.Warnings {
		logger.Warn(w)
	}
	if o.Global.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(struct {
			MessageType string    `json:"message_type"`
			Manifest    string    `json:"manifest"`
			Output      string    `json:"output"`
			URLExpires  time.Time `json:"urlExpires"`
			Verified    bool      `json:"verified"`
			Applied     bool      `json:"applied"`
			restore.Report
		}{"restore", "s3://" + o.S3.Bucket + "/" + b.ManifestKey, o.OutFile, expires.UTC(), o.Verify, o.Apply, rep})
	}
	return nil
}

func (o *RestoreOptions) renderName() string {
	if o.Filename == "-" {
		return "render on stdin"
	}
	return o.Filename
}

// checkInput refuses to wait for a render typed on a terminal: a person
// who ran restore without a pipe or --filename would see nothing happen.
func (o *RestoreOptions) checkInput() error {
	terminal := isTerminal
	if o.terminal != nil {
		terminal = o.terminal
	}
	if o.Filename == "-" && terminal(o.In) {
		return exitcode.Usagef("no render on stdin, which is a terminal: pipe the output of 'hypershift create cluster ... --render' into hcpsnap restore, or pass --%s FILE", FlagFilename)
	}
	return nil
}

func (o *RestoreOptions) readRender() ([]byte, error) {
	var data []byte
	var err error
	if o.Filename == "-" {
		data, err = io.ReadAll(o.In)
	} else {
		data, err = os.ReadFile(o.Filename)
	}
	if err != nil {
		return nil, exitcode.Usagef("--%s: %v", FlagFilename, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, exitcode.Usagef("%s is empty: pipe the output of 'hypershift create cluster ... --render' or pass --%s FILE", o.renderName(), FlagFilename)
	}
	return data, nil
}

func (o *RestoreOptions) backup(ctx context.Context, store *s3.Store) (*restore.Backup, error) {
	if o.manifestKey != "" {
		b, err := restore.Load(ctx, store, o.manifestKey)
		if err != nil {
			return nil, exitcode.New(exitcode.Precondition, err)
		}
		return b, nil
	}
	backups, skipped, err := restore.List(ctx, store, o.Prefix, o.Cluster)
	if err != nil {
		return nil, exitcode.New(exitcode.Precondition, s3.Explain(err, o.S3.Bucket))
	}
	warnUnreadable(ctx, o.S3.Bucket, skipped)
	if len(backups) == 0 && len(skipped) > 0 {
		return nil, exitcode.Preconditionf("no readable backup of cluster %s under s3://%s/%s/: %d manifest(s) could not be read (see the warnings); restore one with --%s", o.Cluster, o.S3.Bucket, o.Prefix, len(skipped), FlagFrom)
	}
	if len(backups) == 0 {
		return nil, exitcode.Preconditionf("no backup of cluster %s under s3://%s/%s/: check --%s, --%s and --%s", o.Cluster, o.S3.Bucket, o.Prefix, FlagCluster, FlagBucket, FlagPrefix)
	}
	if nss := restore.Namespaces(backups); len(nss) > 1 {
		return nil, exitcode.Preconditionf("backups under s3://%s/%s/%s/ are of HostedClusters named %s in several namespaces (%s): name one with --%s (hcpsnap backups --%s %s lists them)",
			o.S3.Bucket, o.Prefix, o.Cluster, o.Cluster, strings.Join(nss, ", "), FlagFrom, FlagCluster, o.Cluster)
	}
	return backups[0], nil
}

// httpClient is the credential-less client of --verify, trusting the same CA
// as the S3 client.
func (o *RestoreOptions) httpClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if o.S3.CABundle != "" || o.S3.Insecure {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.S3.Insecure} //nolint:gosec // explicit, warned flag
		if o.S3.CABundle != "" {
			pem, err := os.ReadFile(o.S3.CABundle)
			if err != nil {
				return nil, exitcode.Usagef("--%s: %v", FlagS3CABundle, err)
			}
			pool, _ := x509.SystemCertPool()
			if pool == nil {
				pool = x509.NewCertPool()
			}
			pool.AppendCertsFromPEM(pem)
			cfg.RootCAs = pool
		}
		tr.TLSClientConfig = cfg
	}
	return &http.Client{Transport: tr, Timeout: 0}, nil
}

func (o *RestoreOptions) writeOutput(out []byte) error {
	if o.OutFile != "" {
		if err := fsutil.WriteFileAtomic(o.OutFile, out, 0o600); err != nil {
			return exitcode.Usagef("--%s: %v", FlagOut, err)
		}
		return nil
	}
	// A shell redirect creates the file with the umask's mode; the result
	// holds a bearer URL and keys, so narrow it when stdout is a file.
	if f, ok := o.Out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			_ = f.Chmod(0o600)
		}
	}
	_, err := o.Out.Write(out)
	return err
}

// applyResult server-side applies (or dry-runs) every document of the result.
func (o *RestoreOptions) applyResult(ctx context.Context, out []byte, hostedCluster string) error {
	cfg, err := kube.RESTConfig(o.Global.Kubeconfig, o.Global.Context)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	objs, err := decodeObjects(out)
	if err != nil {
		return err
	}
	ns, name, _ := strings.Cut(hostedCluster, "/")
	if o.Apply {
		_, err := dyn.Resource(kube.HostedClusterGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return exitcode.Preconditionf("HostedCluster %s already exists on the management cluster: a restore creates a new cluster; choose another name in the render", hostedCluster)
		}
		if !apierrors.IsNotFound(err) {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("check HostedCluster %s: %w", hostedCluster, err))
		}
	}
	logger := log.FromContext(ctx)
	opts := metav1.ApplyOptions{FieldManager: "hcpsnap", Force: true}
	if o.ServerDryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	existing := map[string]bool{}
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("%s %s: the management cluster does not serve this kind: %w", gvk.Kind, obj.GetName(), err))
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == "namespace" {
			if o.ServerDryRun && !existing[obj.GetNamespace()] {
				if _, err := dyn.Resource(namespaceGVR).Get(ctx, obj.GetNamespace(), metav1.GetOptions{}); err != nil {
					logger.Warn("not validated: its namespace does not exist yet (the result creates it)", "kind", gvk.Kind, "name", obj.GetNamespace()+"/"+obj.GetName())
					continue
				}
				existing[obj.GetNamespace()] = true
			}
			ri = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		}
		if _, err := ri.Apply(ctx, obj.GetName(), obj, opts); err != nil {
			what := "apply"
			if o.ServerDryRun {
				what = "server-side dry run of"
			}
			return exitcode.New(exitcode.Precondition, fmt.Errorf("%s %s %s/%s: %w", what, gvk.Kind, obj.GetNamespace(), obj.GetName(), err))
		}
	}
	if o.ServerDryRun {
		logger.Info("server-side dry run passed: the API server accepts the result", "objects", len(objs))
	} else {
		logger.Info("applied to the management cluster", "objects", len(objs))
	}
	return nil
}

var namespaceGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// decodeObjects reads every document of a YAML stream, expanding Lists.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode the result: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, err
			}
			for i := range list.Items {
				objs = append(objs, &list.Items[i])
			}
			continue
		}
		objs = append(objs, u)
	}
}

func newRestoreCommand(stdin io.Reader, stdout io.Writer) *cli.Command {
	o := &RestoreOptions{In: stdin, Out: stdout}
	return &cli.Command{
		Name:  "restore",
		Usage: "prepare a new HostedCluster that restores a backup at creation",
		Description: `Reads the render of 'hypershift create cluster <platform> ... --render' and writes it
back with the backup restored into it:

  hypershift create cluster none ... --render | \
    hcpsnap restore --from s3://BUCKET/backups/CLUSTER/TIMESTAMP/manifest.json > cluster.yaml

The HostedCluster gets spec.etcd.managed.storage.restoreSnapshotURL: a SigV4
presigned GET URL of the snapshot (valid --url-expires), and the Secret named by
spec.secretEncryption.aescbc.activeKey gets the backed-up AES key. The other
Secrets of the key bundle are added for the new control plane namespace. For a
cluster using KMS secret encryption (spec.secretEncryption.type: kms) no key is added:
the render must name every KMS key the backup recorded (as active or backup
key), and is refused with the key it lacks otherwise. All other documents are
left as they are. The URL and the keys are credentials:
they are never logged, and the output file is made private (0600).`,
		Flags:  o.flags(),
		Action: action(o, &o.Global),
	}
}

// originalName is the name cluster-backup.sh gave a management backup's
// snapshot (or static resources archive) on the node, which
// cluster-restore.sh looks for.
func originalName(m *manifest.Manifest, snapshot bool) string {
	switch {
	case m.Original == nil && snapshot:
		return "snapshot_<time>.db"
	case m.Original == nil:
		return "static_kuberesources_<time>.tar.gz"
	case snapshot:
		return checkpoint.OneLine(m.Original.Snapshot)
	}
	return checkpoint.OneLine(m.Original.StaticResources)
}

// backupRef checks how a command names one backup: --cluster must be a
// Kubernetes name, and --from an s3:// URL of a manifest or snapshot, whose
// bucket and manifest key it returns (empty without --from).
func backupRef(cluster, from string) (bucket, manifestKey string, err error) {
	if cluster != "" {
		if errs := validation.IsDNS1123Label(cluster); len(errs) > 0 {
			return "", "", exitcode.Usagef("--%s %q is not a valid Kubernetes name: %s", FlagCluster, cluster, errs[0])
		}
	}
	if from == "" {
		return "", "", nil
	}
	bucket, key, err := s3.ParseURL(from)
	if err != nil {
		return "", "", exitcode.Usagef("--%s: %v", FlagFrom, err)
	}
	if manifestKey, err = restore.ManifestKeyFor(key); err != nil {
		return "", "", exitcode.New(exitcode.Usage, err)
	}
	return bucket, manifestKey, nil
}
