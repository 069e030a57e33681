package manifest

// The layout of a backup in the bucket. A backup is the folder
// <prefix>/<cluster>/<timestamp>/ holding SnapshotObject and ManifestObject,
// and the key bundle <key prefix>/<cluster>/<timestamp>/KeyBundleObject;
// the timestamp is the run's start in UTC, written with TimestampFormat. The
// backup workflow writes this layout and prune reads it, so it lives here.
const (
	TimestampFormat = "20060102T150405Z"
	SnapshotObject  = "snapshot.db"
	ManifestObject  = "manifest.json"
	KeyBundleObject = "key-bundle.json"
)

// ShardSnapshotObject is the object, beside SnapshotObject, that holds the
// snapshot of the etcd shard named shard: snapshot-<shard>.db. Shard names
// are DNS labels, so no shard's object can be SnapshotObject.
func ShardSnapshotObject(shard string) string { return "snapshot-" + shard + ".db" }

// The management cluster's own backups (`hcpsnap pull-node`) form one more
// series beside the HostedClusters': <prefix>/ManagementSeries/<timestamp>/
// holds SnapshotObject, StaticResourcesObject and ManifestObject, and no key
// bundle. The timestamp is the name of the folder the snapshot script made
// on the node (its run's start in UTC, TimestampFormat). The series name
// starts with "_", which no HostedCluster name can, so the two never mix.
const (
	ManagementSeries      = "_management"
	StaticResourcesObject = "static_kuberesources.tar.gz"
)
