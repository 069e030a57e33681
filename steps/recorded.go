package steps

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// SnapshotPath is the snapshot file of a run inside the etcd pod. It is
// derived from the snapshot folder and the run ID every time, never read
// back from a run file or an annotation: the clean-up removes it.
func SnapshotPath(dir, runID string) string {
	return path.Join(dir, "hcpsnap-"+runID+".db")
}

// maxRecordedReplicas bounds a replica count read back from a run: scale-up
// sets the API Deployments to it, so an edited annotation must not be able
// to ask for thousands of API servers.
const maxRecordedReplicas = 100

var (
	hexSHA256    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	snapshotIDRe = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}-[0-9]{1,20}$`)
)

// CheckOutputs checks outputs read back from a run file or a HostedCluster
// annotation before a resumed run uses them. Anyone allowed to patch
// HostedClusters can write the annotation, so every value that names
// something (a namespace, a file in the pod, an object key) must be the one
// the options and the run ID derive, and every other value must be of its
// kind. opts must already be validated; runID must be a valid run ID.
func CheckOutputs(o *Outputs, opts Options, runID string) error {
	bad := func(field, v string) error {
		return fmt.Errorf("recorded %s %s is not what this run derives: the run was edited", field, strconv.Quote(v))
	}
	if o.HCPNamespace != "" && o.HCPNamespace != opts.Namespace+"-"+opts.Cluster {
		return bad("hcpNamespace", o.HCPNamespace)
	}
	if o.Timestamp != "" {
		if t, err := time.Parse(timestampFormat, o.Timestamp); err != nil || t.Format(timestampFormat) != o.Timestamp {
			return bad("timestamp", o.Timestamp)
		}
	}
	switch o.StatusTool {
	case "", StatusToolEtcdutl, StatusToolEtcdctl:
	default:
		return bad("statusTool", o.StatusTool)
	}
	if err := checkAttempt(o.Attempt, o.Timestamp, manifest.SnapshotObject, opts, runID); err != nil {
		return err
	}
	for i, sh := range o.Shards {
		if len(validation.IsDNS1123Label(sh.Shard.Name)) > 0 || sh.Pod != ShardPod(sh.Shard.Name) || slices.ContainsFunc(o.Shards[:i], func(x ShardRun) bool { return x.Shard.Name == sh.Shard.Name }) {
			return bad("etcd shard", sh.Shard.Name+" in pod "+sh.Pod)
		}
		if err := checkAttempt(sh.Attempt, o.Timestamp, manifest.ShardSnapshotObject(sh.Shard.Name), opts, runID); err != nil {
			return fmt.Errorf("etcd shard %s: %w", sh.Shard.Name, err)
		}
		if sh.DBSize < 0 {
			return fmt.Errorf("recorded sizes are negative: the run was edited")
		}
	}
	if o.CACert != "" && o.CACert != opts.Etcd.CACert && o.CACert != CACertPath && o.CACert != LegacyCACertPath {
		return bad("caCert", o.CACert)
	}
	for name, n := range o.Replicas {
		if !slices.Contains(opts.Deployments, name) {
			return bad("replicas of Deployment", name)
		}
		if n < 1 || n > maxRecordedReplicas {
			return fmt.Errorf("recorded replicas %d of Deployment %s are out of range (1 to %d): the run was edited", n, name, maxRecordedReplicas)
		}
	}
	if o.PausedUntil != nil && o.PausedUntil.Present {
		if err := checkPausedUntil(&o.PausedUntil.Value); err != nil {
			return bad("original pausedUntil", o.PausedUntil.Value)
		}
	}
	if o.PausedUntil != nil && !o.PausedUntil.Present && o.PausedUntil.Value != "" {
		return bad("original pausedUntil", o.PausedUntil.Value)
	}
	if o.PauseUntil != "" {
		if _, err := time.Parse(time.RFC3339, o.PauseUntil); err != nil {
			return bad("pause deadline", o.PauseUntil)
		}
	}
	for _, k := range []struct{ field, got, prefix, name string }{
		{"manifestKey", o.ManifestKey, opts.Prefix, manifestObjectName},
		{"keyBundleKey", o.KeyBundleKey, opts.KeyPrefix, keyBundleObjectName},
	} {
		if k.got != "" && (o.Timestamp == "" || k.got != objectKey(k.prefix, opts.Cluster, o.Timestamp, k.name)) {
			return bad(k.field, k.got)
		}
	}
	if f := o.KeyBundleFile; f != "" && (!strings.HasPrefix(f, "/") || path.Clean(f) != f || !checkpoint.Printable(f)) {
		return bad("keyBundleFile", f)
	}
	if err := o.Encryption.Check(); err != nil {
		return fmt.Errorf("recorded encryption: %w: the run was edited", err)
	}
	for _, s := range o.SecretsSaved {
		ns, name, ok := strings.Cut(s, "/")
		if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return bad("saved Secret", s)
		}
	}
	for _, v := range []struct{ field, v string }{{"infraID", o.InfraID}, {"openshiftVersion", o.OpenShiftVersion}} {
		if len(v.v) > 253 || !checkpoint.Printable(v.v) {
			return bad(v.field, v.v)
		}
	}
	if o.EtcdDBSize < 0 {
		return fmt.Errorf("recorded sizes are negative: the run was edited")
	}
	return nil
}

// checkAttempt checks a recorded snapshot attempt (nil: none) as
// CheckOutputs does: its file in the pod, ID, object (objectName in the
// run's folder), upload ID, hashes and sizes.
func checkAttempt(a *Attempt, timestamp, objectName string, opts Options, runID string) error {
	bad := func(field, v string) error {
		return fmt.Errorf("recorded %s %s is not what this run derives: the run was edited", field, strconv.Quote(v))
	}
	if a == nil {
		return nil
	}
	if a.Path != "" && a.Path != SnapshotPath(opts.Etcd.SnapshotDir, runID) {
		return bad("attempt path", a.Path)
	}
	if !snapshotIDRe.MatchString(a.ID) || !strings.HasPrefix(a.ID, runID+"-") {
		return bad("attempt id", a.ID)
	}
	if a.ObjectKey != "" && (timestamp == "" || a.ObjectKey != objectKey(opts.Prefix, opts.Cluster, timestamp, objectName)) {
		return bad("objectKey", a.ObjectKey)
	}
	if len(a.UploadID) > 1024 || strings.IndexFunc(a.UploadID, func(c rune) bool { return c <= ' ' || c > '~' }) >= 0 {
		return bad("uploadID", a.UploadID)
	}
	for _, h := range []struct{ field, v string }{{"sha256", a.SHA256}, {"etcdSHA256", a.EtcdSHA256}} {
		if h.v != "" && !hexSHA256.MatchString(h.v) {
			return bad(h.field, h.v)
		}
	}
	if a.Bytes < 0 || (a.Status != nil && (a.Status.Revision < 0 || a.Status.TotalKey < 0 || a.Status.TotalSize < 0)) {
		return fmt.Errorf("recorded sizes are negative: the run was edited")
	}
	return nil
}

// RunFolder is the bucket and the backup folder (<prefix>/<cluster>/<timestamp>,
// as prune names folders) that a backup run writes, read from what the run
// recorded; ok is false until its preflight chose the timestamp, or when the
// record is not a backup's. The values are only compared, never used to
// name something to change.
func RunFolder(run *checkpoint.Run) (bucket, folder string, ok bool) {
	if run == nil || run.Command != "backup" || len(run.Options) == 0 || len(run.Outputs) == 0 {
		return "", "", false
	}
	var opts Options
	var out Outputs
	if json.Unmarshal(run.Options, &opts) != nil || json.Unmarshal(run.Outputs, &out) != nil || out.Timestamp == "" {
		return "", "", false
	}
	cluster := opts.Cluster
	if cluster == "" {
		cluster = run.Cluster.Name
	}
	return opts.Bucket, strings.TrimSuffix(objectKey(opts.Prefix, cluster, out.Timestamp, ""), "/"), true
}
