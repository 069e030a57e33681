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
