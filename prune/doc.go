// Package prune owns the removal of old backups from the bucket: it finds
// the backup folders of one cluster or of every cluster under a prefix,
// reads what each holds, lets package retention decide their fate, and
// removes the folders that go, each as a whole.
//
// A backup is its folder <prefix>/<cluster>/<UTC timestamp>/ (snapshot.db,
// manifest.json) plus its key bundle <key prefix>/<cluster>/<timestamp>/
// key-bundle.json. Those objects go together, in an order that a crash at
// any point leaves recoverable and recognisable:
//
//  1. every object is checked for an object lock (retention date or legal
//     hold); a locked backup is reported and left whole (a delete that the
//     server refuses later as ObjectLocked is reported as locked too; the
//     folder then keeps its tombstone, and a prune after the lock ends
//     finishes it);
//  2. a tombstone, <folder>/deleting.json, is written: from here on the
//     folder is being removed, and the next prune finishes the removal
//     whatever its policy says;
//  3. the key bundle is deleted (it is named in the tombstone, so it is
//     found even once the manifest is gone);
//  4. the snapshot and every other object of the folder are deleted;
//  5. the manifest is deleted;
//  6. the tombstone is deleted.
//
// A folder with a tombstone is a removal in progress; a folder without a
// readable manifest and without a tombstone is a damaged backup or a backup
// run in progress, which is never removed silently (see package retention).
//
// Prune reads only the bucket, never the cluster: a backup run in progress
// has written its snapshot and key bundle but not yet its manifest, and
// retention keeps such folders while they are younger than the guard (24
// hours; the folder's timestamp is the run's start). `hcpsnap backup
// --prune` prunes after its own run finished and released the cluster's
// lock, so no other run of that cluster can be in progress then.
//
// Layer: workflow (prune). It imports the restore workflow for its reading
// of a backup (restore.CheckSnapshot), adapters (s3) and plain data
// (manifest, retention); the command line imports it.
package prune
