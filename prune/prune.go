package prune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	pathpkg "path"
	"sort"
	"strings"
	"time"

	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
	"github.com/hcpsnap/hcpsnap/retention"
	"github.com/hcpsnap/hcpsnap/s3"
)

// Store is what prune needs of the bucket: restore's reads, and the writes
// of a removal (the tombstone, the deletes).
type Store interface {
	restore.Store
	Put(ctx context.Context, key string, data []byte, opts s3.PutOptions) error
	Delete(ctx context.Context, key string) error
}

var _ Store = (*s3.Store)(nil)

// TombstoneObject is the object that marks a folder as being removed.
const TombstoneObject = "deleting.json"

// maxSmallObject bounds what is read as a manifest or a tombstone.
const maxSmallObject = 4 << 20

// Options say what to prune and how.
type Options struct {
	// Bucket names the bucket in messages and manifests' bucket fields.
	Bucket string
	// Prefix and KeyPrefix are backup's --prefix and --key-prefix.
	Prefix    string
	KeyPrefix string
	// Cluster limits the prune to one cluster; empty means every cluster
	// under Prefix, each with its own application of the policy.
	Cluster string
	// Retention is the policy and its safety settings; Retention.Now is
	// filled by Plan when zero.
	Retention retention.Options
	// Running names the folders (Folder.Key) that unfinished backup runs
	// write, with their run IDs: they are kept whatever the policy.
	Running map[string]string
}

// Folder is one backup folder and what was found in it.
type Folder struct {
	Cluster   string
	Timestamp string
	// Key is the folder's key prefix, without the trailing slash.
	Key  string
	Time time.Time
	// Objects are the objects listed under the folder.
	Objects []s3.ObjectInfo
	// KeyBundle is the key of the backup's key bundle in the bucket, from
	// the tombstone, the manifest or the key prefix; empty when the backup
	// kept its key bundle in a local file.
	KeyBundle string
	Manifest  *manifest.Manifest
	// Tombstone is set when an earlier prune began to remove the folder.
	Tombstone bool
	State     retention.State
	Reason    string
}

// Item is a folder and its decision.
type Item struct {
	Folder   *Folder
	Decision retention.Decision
}

// Ignored is a key under the prefix that is not in a backup folder (a
// folder name that is not a timestamp, an object beside the folders); it is
// left alone and reported.
type Ignored struct {
	Key    string
	Reason string
}

// Plan lists the backup folders, reads each and decides its fate. A failure
// to list or to read an object that the listing showed is an error: deciding
// on a partial view could remove a backup that is only unreadable for a
// moment. The items are per cluster in name order, newest first.
func Plan(ctx context.Context, store Store, opts Options) ([]Item, []Ignored, error) {
	if err := opts.Retention.Policy.Validate(); err != nil {
		return nil, nil, err
	}
	if opts.Retention.Now.IsZero() {
		opts.Retention.Now = time.Now()
	}
	base := strings.Trim(opts.Prefix, "/")
	list := base
	if opts.Cluster != "" {
		list = pathpkg.Join(base, opts.Cluster)
	}
	if list != "" {
		list += "/"
	}
	objs, err := store.List(ctx, list)
	if err != nil {
		return nil, nil, err
	}
	folders, ignored := group(base, objs)
	byCluster := map[string][]*Folder{}
	var clusters []string
	for _, f := range folders {
		if err := read(ctx, store, opts, f); err != nil {
			return nil, ignored, err
		}
		if _, ok := byCluster[f.Cluster]; !ok {
			clusters = append(clusters, f.Cluster)
		}
		byCluster[f.Cluster] = append(byCluster[f.Cluster], f)
	}
	sort.Strings(clusters)
	var items []Item
	for _, c := range clusters {
		fs := byCluster[c]
		byID := map[string]*Folder{}
		var bs []retention.Backup
		for _, f := range fs {
			byID[f.Key] = f
			bs = append(bs, retention.Backup{ID: f.Key, Time: f.Time, State: f.State, Reason: f.Reason, Run: opts.Running[f.Key]})
		}
		ds, err := retention.Apply(opts.Retention, bs)
		if err != nil {
			return nil, ignored, err
		}
		for _, d := range ds {
			items = append(items, Item{Folder: byID[d.Backup.ID], Decision: d})
		}
	}
	return items, ignored, nil
}

// group sorts the listed objects into backup folders.
func group(base string, objs []s3.ObjectInfo) ([]*Folder, []Ignored) {
	var folders []*Folder
	byKey := map[string]*Folder{}
	var ignored []Ignored
	seen := map[string]bool{}
	for _, o := range objs {
		rel := o.Key
		if base != "" {
			rel = strings.TrimPrefix(o.Key, base+"/")
		}
		parts := strings.SplitN(rel, "/", 3)
		if len(parts) < 3 || parts[0] == "" || parts[1] == "" {
			ignored = append(ignored, Ignored{Key: o.Key, Reason: "not inside a backup folder <prefix>/<cluster>/<timestamp>/"})
			continue
		}
		key := pathpkg.Join(base, parts[0], parts[1])
		t, err := time.Parse(manifest.TimestampFormat, parts[1])
		if err != nil || t.Format(manifest.TimestampFormat) != parts[1] {
			if !seen[key] {
				seen[key] = true
				ignored = append(ignored, Ignored{Key: key + "/", Reason: "folder name is not a backup's UTC timestamp (" + manifest.TimestampFormat + ")"})
			}
			continue
		}
		f, ok := byKey[key]
		if !ok {
			f = &Folder{Cluster: parts[0], Timestamp: parts[1], Key: key, Time: t}
			byKey[key] = f
			folders = append(folders, f)
		}
		f.Objects = append(f.Objects, o)
	}
	return folders, ignored
}

// has reports whether the folder's listing holds the object name.
func (f *Folder) has(name string) bool {
	for _, o := range f.Objects {
		if o.Key == f.Key+"/"+name {
			return true
		}
	}
	return false
}

// tombstone is the content of TombstoneObject.
type tombstone struct {
	SchemaVersion int       `json:"schemaVersion"`
	Folder        string    `json:"folder"`
	KeyBundle     string    `json:"keyBundle,omitempty"`
	Since         time.Time `json:"since"`
	Rules         []string  `json:"rules"`
}

// read fills in what the folder holds and whether it is a verified backup.
func read(ctx context.Context, store Store, opts Options, f *Folder) error {
	derivedBundle := strings.TrimPrefix(pathpkg.Join(strings.Trim(opts.KeyPrefix, "/"), f.Cluster, f.Timestamp, manifest.KeyBundleObject), "/")
	if f.has(TombstoneObject) {
		f.Tombstone = true
		f.State = retention.Deleting
		f.KeyBundle = derivedBundle
		// The tombstone names the key bundle the manifest named; an
		// unreadable one still marks the folder, and the key prefix
		// names the bundle instead.
		if data, err := restore.ReadSmall(ctx, store, f.Key+"/"+TombstoneObject, maxSmallObject); err == nil {
			var ts tombstone
			if json.Unmarshal(data, &ts) == nil && ownsBundle(f, ts.KeyBundle) {
				f.KeyBundle = ts.KeyBundle
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	}
	f.KeyBundle = derivedBundle
	f.State = retention.Incomplete
	if !f.has(manifest.ManifestObject) {
		f.Reason = "manifest missing"
		return nil
	}
	data, err := restore.ReadSmall(ctx, store, f.Key+"/"+manifest.ManifestObject, maxSmallObject)
	if err != nil {
		return fmt.Errorf("read the manifest of %s: %w", f.Key, err)
	}
	m, err := manifest.Decode(data)
	if err != nil {
		f.Reason = "manifest unreadable (" + oneLine(err.Error()) + ")"
		return nil
	}
	f.Manifest = m
	switch {
	case m.Snapshot.Key != f.Key+"/"+manifest.SnapshotObject || m.Cluster != f.Cluster:
		f.Reason = "manifest describes another backup (" + oneLine(m.Snapshot.Key) + ")"
		return nil
	case m.KeyBundle.Key != "" && !ownsBundle(f, m.KeyBundle.Key):
		f.Reason = "manifest names a key bundle that is not this backup's (" + oneLine(m.KeyBundle.Key) + ")"
		return nil
	case (m.Snapshot.Bucket != "" && m.Snapshot.Bucket != opts.Bucket) || (m.KeyBundle.Bucket != "" && m.KeyBundle.Bucket != opts.Bucket):
		f.Reason = "manifest names another bucket"
		return nil
	}
	f.KeyBundle = m.KeyBundle.Key
	if !f.has(manifest.SnapshotObject) {
		f.Reason = "snapshot missing"
		return nil
	}
	if _, _, err := store.Head(ctx, m.Snapshot.Key); err != nil {
		return fmt.Errorf("read the snapshot of %s: %w", f.Key, err)
	}
	if err := restore.CheckSnapshot(ctx, store, &restore.Backup{ManifestKey: f.Key + "/" + manifest.ManifestObject, Manifest: m}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.Reason = "snapshot does not match the manifest"
		return nil
	}
	// A backup with etcd shards is whole only with every shard's snapshot.
	for i, sh := range m.Shards {
		name := manifest.ShardSnapshotObject(sh.Name)
		if sh.Snapshot.Key != f.Key+"/"+name || !f.has(name) {
			f.Reason = "snapshot of etcd shard " + oneLine(sh.Name) + " missing"
			return nil
		}
		if err := restore.CheckSnapshot(ctx, store, &restore.Backup{ManifestKey: f.Key + "/" + manifest.ManifestObject, Manifest: m.ForShard(i)}); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.Reason = "snapshot of etcd shard " + oneLine(sh.Name) + " does not match the manifest"
			return nil
		}
	}
	f.State, f.Reason = retention.Verified, ""
	return nil
}

// ownsBundle reports whether key can be the key bundle of the folder: any
// key prefix, then the folder's cluster and timestamp. A manifest or
// tombstone is untrusted input, and must not make prune delete another
// backup's objects.
func ownsBundle(f *Folder, key string) bool {
	if key == "" {
		return false
	}
	tail := f.Cluster + "/" + f.Timestamp + "/" + manifest.KeyBundleObject
	return (key == tail || strings.HasSuffix(key, "/"+tail)) && pathpkg.Clean(key) == key && !strings.HasPrefix(key, "/")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Result is the outcome of one removal.
type Result int

const (
	// Removed: every object of the backup is gone.
	Removed Result = iota
	// Locked: an object of the backup is under an object lock; nothing was
	// deleted.
	Locked
	// Failed: a request failed; the folder keeps its tombstone if it was
	// written, and the next prune finishes it.
	Failed
)

// ErrLocked marks a backup left whole because of an object lock.
var ErrLocked = errors.New("object lock")

// Remove deletes the backup of the folder in the order of the package's
// documentation. It returns Removed, or Locked with the objects' locks, or
// Failed with the error.
func Remove(ctx context.Context, store Store, f *Folder, rules []string, now time.Time) (Result, error) {
	keys := f.ownedKeys()
	for _, k := range keys {
		info, ok, err := store.Head(ctx, k)
		if err != nil {
			return Failed, err
		}
		if ok {
			if locked, why := info.Locked(now); locked {
				return Locked, fmt.Errorf("%w on %s (%s): left whole; prune removes it once the lock ends", ErrLocked, k, why)
			}
		}
	}
	if !f.Tombstone {
		data, err := json.Marshal(tombstone{SchemaVersion: 1, Folder: f.Key, KeyBundle: f.KeyBundle, Since: now.UTC(), Rules: rules})
		if err != nil {
			return Failed, err
		}
		if err := store.Put(ctx, f.Key+"/"+TombstoneObject, data, s3.PutOptions{ContentType: "application/json"}); err != nil {
			return Failed, fmt.Errorf("mark %s as being removed: %w", f.Key, err)
		}
		f.Tombstone = true
	}
	for _, k := range keys {
		if err := store.Delete(ctx, k); err != nil {
			if errors.Is(err, s3.ErrObjectLocked) {
				return Locked, fmt.Errorf("%w: %w; the folder keeps its tombstone and a prune after the lock ends finishes it", ErrLocked, err)
			}
			if errors.Is(err, s3.ErrDeleteRefused) {
				return Failed, fmt.Errorf("%w; the folder keeps its tombstone and the next prune tries again", err)
			}
			return Failed, err
		}
	}
	if err := store.Delete(ctx, f.Key+"/"+TombstoneObject); err != nil {
		return Failed, err
	}
	return Removed, nil
}

// ownedKeys are the objects of the backup in the order they are deleted:
// the key bundle, the snapshot, every other object of the folder, the
// manifest. The tombstone is not among them.
func (f *Folder) ownedKeys() []string {
	var keys []string
	seen := map[string]bool{f.Key + "/" + TombstoneObject: true}
	add := func(k string) {
		if k != "" && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	add(f.KeyBundle)
	add(f.Key + "/" + manifest.SnapshotObject)
	manifestKey := f.Key + "/" + manifest.ManifestObject
	seen[manifestKey] = true
	for _, o := range f.Objects {
		add(o.Key)
	}
	seen[manifestKey] = false
	add(manifestKey)
	return keys
}

// Outcome is what became of one item.
type Outcome struct {
	Item
	// Result is "kept", "removed", "would-remove", "locked" or "failed".
	Result string
	Err    error
}

// Results of an Outcome.
const (
	ResultKept        = "kept"
	ResultRemoved     = "removed"
	ResultWouldRemove = "would-remove"
	ResultLocked      = "locked"
	ResultFailed      = "failed"
)

// Execute removes the items whose decision is Remove or Finish, one
// backup at a time, and reports every item to emit in order. With dryRun it
// removes nothing and reports "would-remove". A locked or failed backup does
// not stop the others; the end of ctx does, and is returned.
func Execute(ctx context.Context, store Store, items []Item, now time.Time, dryRun bool, emit func(Outcome)) error {
	for _, it := range items {
		o := Outcome{Item: it, Result: ResultKept}
		if it.Decision.Action != retention.Keep {
			o.Result = ResultWouldRemove
			if !dryRun {
				if err := ctx.Err(); err != nil {
					return err
				}
				res, err := Remove(ctx, store, it.Folder, it.Decision.Rules, now)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				o.Err = err
				switch res {
				case Removed:
					o.Result = ResultRemoved
				case Locked:
					o.Result = ResultLocked
				default:
					o.Result = ResultFailed
				}
			}
		}
		emit(o)
	}
	return nil
}
