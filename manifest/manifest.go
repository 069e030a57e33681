package manifest

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// SchemaVersion is the manifest version this build writes and the newest
// it reads. A backup with shard snapshots is written as
// SchemaVersionShards, so that an hcpsnap that knows nothing of shards
// refuses it instead of restoring the default member alone; every other
// backup is still written as version 1, which every hcpsnap reads.
const (
	SchemaVersion       = 1
	SchemaVersionShards = 2
	newestSchemaVersion = SchemaVersionShards
)

// Object metadata (x-amz-meta-*) that ties a snapshot object to the run and
// the snapshot attempt that uploaded it: a resumed backup recognises its own
// upload by them, and restore checks the run against the manifest's.
const (
	MetaRunID      = "hcpsnap-run"
	MetaSnapshotID = "hcpsnap-snapshot"
)

// Manifest describes one backup. It holds no secret: the key bundle is
// referenced by its object key, never inlined.
type Manifest struct {
	SchemaVersion    int    `json:"schemaVersion"`
	RunID            string `json:"runID"`
	Cluster          string `json:"cluster"`
	Namespace        string `json:"namespace"`
	HCPNamespace     string `json:"hcpNamespace"`
	InfraID          string `json:"infraID,omitempty"`
	OpenShiftVersion string `json:"openshiftVersion,omitempty"`
	Online           bool   `json:"online"`
	// Via is how the snapshot left etcd: "stream" or "exec" (absent in
	// manifests written before both existed: exec).
	Via       string    `json:"via,omitempty"`
	Etcd      Etcd      `json:"etcd"`
	Snapshot  Object    `json:"snapshot"`
	KeyBundle KeyBundle `json:"keyBundle"`
	// Encryption is how the cluster encrypted its Secrets; absent in
	// manifests written before hcpsnap recorded it.
	Encryption *Encryption `json:"encryption,omitempty"`
	Times      Times       `json:"times"`
	// MissingShards are etcd shards of the HostedCluster (HyperShift's
	// spec.etcd.managed.shards) whose data this backup does NOT hold: it was
	// taken of the default member only (backup --without-shards), so a
	// cluster restored from it lacks every object of their resources. Absent
	// when the cluster had no shards, and in manifests written before
	// hcpsnap read shards.
	MissingShards []Shard `json:"missingShards,omitempty"`
	// Shards are the snapshots of the HostedCluster's etcd shards, one
	// member of each, taken in the same offline window as Snapshot (whose
	// member holds every resource not routed to a shard). A backup with
	// shards has SchemaVersionShards.
	Shards []ShardSnapshot `json:"shards,omitempty"`
	// DowntimeSeconds adds up every window of Downtimes.
	DowntimeSeconds float64 `json:"downtimeSeconds"`
	// Downtimes are the windows in which the API was down, in order: more
	// than one when a broken snapshot stream was taken again.
	Downtimes      []Window `json:"downtimes,omitempty"`
	HCPSnapVersion string   `json:"hcpsnapVersion"`

	// Source is where the snapshot comes from: empty for a HostedCluster's
	// etcd (every manifest written before the field existed), or
	// SourceManagement for the management cluster's own etcd, copied off a
	// master by `hcpsnap pull-node`. Such a backup lives in the series
	// ManagementSeries, has no key bundle and is restored with OpenShift's
	// cluster-restore.sh, not by hcpsnap.
	Source string `json:"source,omitempty"`
	// Node is the master whose folder the snapshot was copied from
	// (SourceManagement only).
	Node string `json:"node,omitempty"`
	// Original names the files as cluster-backup.sh wrote them on the node
	// (SourceManagement only): cluster-restore.sh looks for these names.
	Original *OriginalFiles `json:"originalFiles,omitempty"`
	// StaticResources is the static_kuberesources archive that
	// cluster-backup.sh writes beside the snapshot (SourceManagement only).
	StaticResources *Object `json:"staticResources,omitempty"`
}

// OriginalFiles are the names a management backup's files had on the node.
type OriginalFiles struct {
	Folder          string `json:"folder"`
	Snapshot        string `json:"snapshot"`
	StaticResources string `json:"staticResources"`
}

// SourceManagement is Manifest.Source for a snapshot of the management
// cluster's own etcd.
const SourceManagement = "management"

// IsManagement reports whether the manifest describes a snapshot of the
// management cluster's own etcd.
func (m *Manifest) IsManagement() bool { return m.Source == SourceManagement }

// Etcd is what `etcdutl snapshot status` (or, before etcd 3.6, `etcdctl
// snapshot status`) reported, and etcd's own SHA-256 of the database, which
// is appended to the snapshot file. TotalKeys counts every key of every bucket
// with the 3.5 tools and the live keys with 3.6's; StorageVersion is reported
// from 3.6 on. A streamed snapshot (Via "stream") is read by hcpsnap itself
// as it passes: revision, size and storage version exactly as etcdutl
// reports them, but no TotalKeys or Hash (they need every page in key order,
// which a stream does not give without a copy).
type Etcd struct {
	Member         string `json:"member"`
	Revision       int64  `json:"revision"`
	TotalKeys      int64  `json:"totalKeys,omitempty"`
	TotalSize      int64  `json:"totalSize"`
	Hash           uint32 `json:"hash,omitempty"`
	SHA256         string `json:"sha256"`
	StorageVersion string `json:"storageVersion,omitempty"`
}

// Object is a stored object with the SHA-256 of its whole content.
type Object struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// KeyBundle says where the Secrets went: an object (with its encryption) or
// a local file, and which Secrets (names only).
type KeyBundle struct {
	Bucket  string   `json:"bucket,omitempty"`
	Key     string   `json:"key,omitempty"`
	File    string   `json:"file,omitempty"`
	SSE     string   `json:"sse,omitempty"`
	Secrets []string `json:"secrets"`
}

// Shard is an etcd shard of a HostedCluster: its own etcd StatefulSet
// etcd-<Name> holding the resources routed to it.
type Shard struct {
	Name      string          `json:"name"`
	Resources []ShardResource `json:"resources"`
	Replicas  int32           `json:"replicas,omitempty"`
	// StorageType is "PersistentVolume", "EmptyDir", or empty when the
	// shard inherits the default member's storage.
	StorageType string `json:"storageType,omitempty"`
}

// ShardSnapshot is the snapshot of one etcd shard: the shard as the
// HostedCluster described it, its object and what etcd reported of it.
// Etcd.Member is the shard's pod (etcd-<name>-0).
type ShardSnapshot struct {
	Shard
	Etcd     Etcd   `json:"etcd"`
	Snapshot Object `json:"snapshot"`
}

// ForShard returns a manifest that describes shard i's snapshot as if it
// were the backup's only one: Snapshot and Etcd are the shard's, Shards is
// empty, every other field is m's. The drill and the integrity checks read
// a shard's snapshot through it.
func (m *Manifest) ForShard(i int) *Manifest {
	c := *m
	c.Snapshot, c.Etcd, c.Shards = m.Shards[i].Snapshot, m.Shards[i].Etcd, nil
	return &c
}

// ShardResource is a resource routed to a shard; APIGroup "" is the core group.
type ShardResource struct {
	APIGroup string `json:"apiGroup"`
	Resource string `json:"resource"`
}

// String names the resource as kubectl does: "events", "leases.coordination.k8s.io".
func (r ShardResource) String() string {
	if r.APIGroup == "" {
		return r.Resource
	}
	return r.Resource + "." + r.APIGroup
}

// Describe names the shard and its resources for one line of output:
// "events (events)", "leases (leases.coordination.k8s.io)".
func (s Shard) Describe() string {
	names := make([]string, len(s.Resources))
	for i, r := range s.Resources {
		names[i] = r.String()
	}
	return s.Name + " (" + strings.Join(names, ", ") + ")"
}

// DescribeShards joins Describe of every shard with ", ".
func DescribeShards(shards []Shard) string {
	out := make([]string, len(shards))
	for i, s := range shards {
		out[i] = s.Describe()
	}
	return strings.Join(out, ", ")
}

// Window is one interval of API downtime.
type Window struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"seconds"`
}

// Times are the run's milestones, in UTC.
type Times struct {
	Started       time.Time  `json:"started"`
	SnapshotSaved *time.Time `json:"snapshotSaved,omitempty"`
	DowntimeStart *time.Time `json:"downtimeStart,omitempty"`
	DowntimeEnd   *time.Time `json:"downtimeEnd,omitempty"`
	Uploaded      *time.Time `json:"uploaded,omitempty"`
	Finished      time.Time  `json:"finished"`
}

// Decode parses a manifest and checks that this build can use it.
func Decode(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("not an hcpsnap manifest: %w", err)
	}
	if m.SchemaVersion < 1 || m.Snapshot.Key == "" {
		return nil, fmt.Errorf("not an hcpsnap manifest: schemaVersion or snapshot key missing")
	}
	if m.Source != "" && m.Source != SourceManagement {
		return nil, fmt.Errorf("manifest source %q is not one this hcpsnap knows (%q or none): use a newer hcpsnap", m.Source, SourceManagement)
	}
	if m.SchemaVersion > newestSchemaVersion {
		return nil, fmt.Errorf("manifest schema version %d is newer than this hcpsnap reads (%d): use a newer hcpsnap", m.SchemaVersion, newestSchemaVersion)
	}
	if (len(m.Shards) > 0) != (m.SchemaVersion == SchemaVersionShards) {
		return nil, fmt.Errorf("manifest schema version %d with %d shard snapshots: version %d is the one of a backup with shards, and only of one", m.SchemaVersion, len(m.Shards), SchemaVersionShards)
	}
	if err := m.Encryption.Check(); err != nil {
		return nil, fmt.Errorf("manifest encryption section: %w", err)
	}
	for i, sh := range m.MissingShards {
		if sh.Name == "" {
			return nil, fmt.Errorf("manifest missingShards[%d] has no name", i)
		}
	}
	seen := map[string]bool{}
	for i, sh := range m.Shards {
		switch {
		case sh.Name == "" || seen[sh.Name]:
			return nil, fmt.Errorf("manifest shards[%d] has no name, or one used twice (%q)", i, sh.Name)
		case sh.Snapshot.Key == "" || sh.Snapshot.Key == m.Snapshot.Key:
			return nil, fmt.Errorf("manifest shards[%d] (%s) names no snapshot of its own", i, sh.Name)
		}
		seen[sh.Name] = true
	}
	if len(m.Shards) > 0 && len(m.MissingShards) > 0 {
		return nil, fmt.Errorf("manifest has both shard snapshots and missing shards: it was edited")
	}
	return &m, nil
}
