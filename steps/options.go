package steps

import (
	"context"
	"io"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/s3"
)

// Options are what the user asked for, as the steps need it. The command
// fills it from flags and validates it before any step runs.
type Options struct {
	Cluster   string
	Namespace string
	// Bucket, Prefix and KeyPrefix place the objects:
	// <Prefix>/<cluster>/<timestamp>/snapshot.db and manifest.json,
	// <KeyPrefix>/<cluster>/<timestamp>/key-bundle.json.
	Bucket    string
	Prefix    string
	KeyPrefix string
	// Member is the etcd pod to snapshot (etcd-0); Container its container.
	Member    string
	Container string
	// Deployments are scaled down while the snapshot is taken.
	Deployments []string
	// PauseTimeout is how long from now the pause deadline lies.
	PauseTimeout time.Duration
	// WaitTimeout bounds each wait for the cluster (pause seen, pods gone, available).
	WaitTimeout time.Duration
	// Online skips the pause and the scaling: etcd snapshots are consistent
	// without downtime.
	Online bool
	// HoldAPIUntilSaved keeps the API down until the snapshot file is
	// complete, as the manual runbook does. By default it comes back as soon
	// as etcd has fixed the snapshot's revision (its first byte is written).
	HoldAPIUntilSaved bool
	SkipSteps         []string
	// Via is how the snapshot leaves etcd: ViaStream (port-forward and
	// etcd's snapshot API, straight into the upload) or ViaExec (the
	// runbook's etcdctl in the pod, a file on etcd's volume). Empty, as in
	// runs recorded before it existed, means ViaExec.
	Via string
	// SnapshotRetries bounds how many times a broken snapshot stream is
	// taken again from the start within one run (--via stream).
	SnapshotRetries int
	// Etcd says how to reach the member from inside its pod (--via exec).
	Etcd EtcdOptions
	// KeyOut, when set, writes the key bundle to this local file (0600)
	// instead of the bucket.
	KeyOut string
	// SSE and SSEKMSKeyID choose the server-side encryption of the key bundle.
	SSE         string
	SSEKMSKeyID string
	// WithoutShards backs up the default etcd member of a HostedCluster
	// that has etcd shards, leaving the shards' data out (the manifest
	// names them). Without it such a cluster is refused.
	WithoutShards bool
}

// EtcdOptions are the runbook's etcdctl settings; an empty CACert is detected.
type EtcdOptions struct {
	Etcdctl string
	// Etcdutl reads the status of the snapshot file: etcd 3.6 removed
	// `etcdctl snapshot status`. Empty means DefaultEtcdutl.
	Etcdutl     string
	Endpoint    string
	CACert      string
	Cert        string
	Key         string
	SnapshotDir string
}

// The ways a snapshot can leave etcd (Options.Via).
const (
	ViaStream = "stream"
	ViaExec   = "exec"
)

// The runbook's defaults. The CA moved in OCP 4.12; the old path is the fallback.
const (
	DefaultEtcdctl     = "/usr/bin/etcdctl"
	DefaultEtcdutl     = "/usr/bin/etcdutl"
	DefaultEndpoint    = "localhost:2379"
	CACertPath         = "/etc/etcd/tls/etcd-ca/ca.crt"
	LegacyCACertPath   = "/etc/etcd/tls/client/etcd-client-ca.crt"
	DefaultClientCert  = "/etc/etcd/tls/client/etcd-client.crt"
	DefaultClientKey   = "/etc/etcd/tls/client/etcd-client.key"
	DefaultSnapshotDir = "/var/lib/data"
)

// DefaultDeployments are the API servers the runbook scales to zero.
var DefaultDeployments = []string{"kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver"}

// Original is a recorded value that may have been absent.
type Original struct {
	Present bool   `json:"present"`
	Value   string `json:"value,omitempty"`
}

// SnapshotStatus is what `etcdutl snapshot status -w json` reports (and
// `etcdctl snapshot status` before etcd 3.6). TotalKey counts every key of
// every bucket in 3.5, the live keys of the key bucket in 3.6; revision and
// hash mean the same in both. Version, the storage version, is new in 3.6.
type SnapshotStatus struct {
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int64  `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
	Version   string `json:"version,omitempty"`
}

// The programs that can read a snapshot file's status; preflight chooses one
// and records it in Outputs.StatusTool.
const (
	StatusToolEtcdutl = "etcdutl"
	StatusToolEtcdctl = "etcdctl"
)

// Outputs are the values steps record: originals before a change, results
// after. They are the run file's "outputs", so a resumed run and an undo see
// exactly what the interrupted run saw.
type Outputs struct {
	HCPNamespace     string `json:"hcpNamespace,omitempty"`
	InfraID          string `json:"infraID,omitempty"`
	OpenShiftVersion string `json:"openshiftVersion,omitempty"`
	// Timestamp names the backup's objects (UTC, 20060102T150405Z).
	Timestamp string `json:"timestamp,omitempty"`

	PausedUntil *Original        `json:"pausedUntil,omitempty"`
	PauseUntil  string           `json:"pauseDeadline,omitempty"`
	Replicas    map[string]int32 `json:"replicas,omitempty"`

	CACert string `json:"caCert,omitempty"`
	// StatusTool is what reads the snapshot's status, StatusToolEtcdutl or
	// StatusToolEtcdctl, chosen by preflight from what the container has.
	// Only the name is recorded: the path comes from the options.
	StatusTool string `json:"statusTool,omitempty"`
	// EtcdDBSize is the member's database size at preflight: an estimate of
	// the snapshot's size while etcdctl still writes it.
	EtcdDBSize int64 `json:"etcdDBSize,omitempty"`
	// Attempt is the current snapshot attempt with everything derived from
	// it. snapshot-save replaces it as a whole, so that nothing of an
	// earlier attempt can pass for the new one.
	Attempt *Attempt `json:"attempt,omitempty"`

	ManifestKey   string   `json:"manifestKey,omitempty"`
	KeyBundleKey  string   `json:"keyBundleKey,omitempty"`
	KeyBundleFile string   `json:"keyBundleFile,omitempty"`
	SecretsSaved  []string `json:"secretsSaved,omitempty"`
	// Encryption is what save-keys read of the HostedCluster's secret
	// encryption, for the manifest.
	Encryption    *manifest.Encryption `json:"encryption,omitempty"`
	DowntimeStart *time.Time           `json:"downtimeStart,omitempty"`
	DowntimeEnd   *time.Time           `json:"downtimeEnd,omitempty"`
	// EarlierDowntimes are the windows closed before the current one: a
	// snapshot taken again (a broken stream) takes the API down again.
	EarlierDowntimes []Window `json:"earlierDowntimes,omitempty"`
	// Retakes counts the snapshots taken again after a broken stream.
	Retakes int `json:"retakes,omitempty"`
	// MissingShards are the HostedCluster's etcd shards, which this backup
	// leaves out (WithoutShards), for the manifest.
	MissingShards []manifest.Shard `json:"missingShards,omitempty"`
	// Shards are the HostedCluster's etcd shards this backup takes a
	// snapshot of, beside the default member's Attempt, in the same
	// offline window.
	Shards []ShardRun `json:"shards,omitempty"`
}

// ShardRun is the snapshot of one etcd shard in a run: the shard, the pod
// of the member it is taken in (etcd-<name>-0) and the current attempt,
// which snapshot-save replaces together with the default member's.
type ShardRun struct {
	Shard manifest.Shard `json:"shard"`
	Pod   string         `json:"pod"`
	// DBSize is the member's database size at preflight, an estimate of
	// the snapshot's size while etcdctl still writes it.
	DBSize  int64    `json:"dbSize,omitempty"`
	Attempt *Attempt `json:"attempt,omitempty"`
}

// ShardPod is the pod of a shard's first member, as HyperShift names the
// shard's StatefulSet etcd-<name>.
func ShardPod(shard string) string { return "etcd-" + shard + "-0" }

// Window is a closed interval of API downtime.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Attempt is one run of snapshot-save and the outputs that belong to it:
// the file in the pod, the object it was uploaded to and what etcd says of
// it. The manifest is built from one Attempt only.
type Attempt struct {
	// ID names the attempt; the uploaded object carries it, so that a
	// resumed run recognises its own upload.
	ID string `json:"id"`
	// Via is how the snapshot leaves etcd (Options.Via); Path, the file in
	// the member's container, is empty when it is streamed.
	Via     string     `json:"via,omitempty"`
	Path    string     `json:"path"`
	SavedAt *time.Time `json:"savedAt,omitempty"`
	// Bytes and EtcdSHA256 describe the complete file (etcd's trailing
	// SHA-256 of the database); SHA256 is the uploaded object's.
	Bytes        int64           `json:"bytes,omitempty"`
	EtcdSHA256   string          `json:"etcdSHA256,omitempty"`
	SHA256       string          `json:"sha256,omitempty"`
	ObjectKey    string          `json:"objectKey,omitempty"`
	UploadID     string          `json:"uploadID,omitempty"`
	UploadReused bool            `json:"uploadReused,omitempty"`
	UploadStart  *time.Time      `json:"uploadStart,omitempty"`
	UploadEnd    *time.Time      `json:"uploadEnd,omitempty"`
	Status       *SnapshotStatus `json:"status,omitempty"`
}

// Uploaded reports whether the attempt's object is complete and described:
// stored, hashed and its status read.
func (a *Attempt) Uploaded() bool {
	return a != nil && a.ObjectKey != "" && a.SHA256 != "" && a.Bytes > 0 && a.EtcdSHA256 != "" && a.Status != nil
}

// Clients are the narrow ways steps reach the outside world.
type Clients struct {
	// Kube reads and scales Deployments, reads pods and Secrets.
	Kube kubernetes.Interface
	// HyperShift reads and patches HostedClusters and reads HostedControlPlanes.
	HyperShift HyperShift
	// Exec runs commands in pods (--via exec).
	Exec Executor
	// Etcd reaches a member's etcd through port-forward (--via stream).
	Etcd EtcdStream
	// Store holds the backups.
	Store Store
}

// Executor runs a command in a container of a pod, as `kubectl exec` does.
// A non-zero exit status is returned as an error that names it.
type Executor interface {
	Exec(ctx context.Context, namespace, pod, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error
}

// EtcdStream speaks to an etcd member from hcpsnap's own process, through
// the apiserver's port-forward to the member's pod: nothing runs or is
// written in the pod.
type EtcdStream interface {
	// Status answers from the member: its database size and version.
	Status(ctx context.Context, namespace, pod string) (dbSize int64, version string, err error)
	// Snapshot opens the member's snapshot stream: the bolt database, then
	// etcd's SHA-256 of it, the bytes `etcdctl snapshot save` writes. A
	// broken stream fails a Read; it never ends early with io.EOF.
	Snapshot(ctx context.Context, namespace, pod string) (io.ReadCloser, error)
}

// Store is what the backup needs of an S3 bucket. Keys are relative to the
// bucket the store was opened on.
type Store interface {
	// CheckWritable proves the bucket exists and accepts writes under prefix.
	CheckWritable(ctx context.Context, prefix string) error
	// Head returns the object's info, or ok=false when it does not exist.
	Head(ctx context.Context, key string) (info s3.ObjectInfo, ok bool, err error)
	// Upload streams r into key with a multipart upload whose parts carry
	// SHA-256 checksums that the server verifies; memory is bounded by part
	// size times concurrency. Any error, including one r returns, aborts the
	// multipart upload.
	Upload(ctx context.Context, key string, r io.Reader, opts s3.UploadOptions) (s3.UploadResult, error)
	// Put stores a small object in one request.
	Put(ctx context.Context, key string, data []byte, opts s3.PutOptions) error
	// Get streams an object.
	Get(ctx context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error)
	// GetRange reads n bytes of an object from offset off.
	GetRange(ctx context.Context, key string, off, n int64) ([]byte, error)
	// AbortUploads aborts every unfinished multipart upload of key.
	AbortUploads(ctx context.Context, key string) error
}

var _ Store = (*s3.Store)(nil)
