// Package checkpoint owns the run file: the versioned JSON record of one
// hcpsnap run — which steps ran, what each recorded before changing anything,
// and what it produced — that makes a run resumable and its undo possible.
//
// A run is identified by its run ID (its lineage, as terraform's state has
// one) and bound to one cluster; every write bumps its serial. Files are
// written atomically (temp file, fsync, rename, fsync of the folder), and a
// run file of another cluster, another run or a newer schema is refused.
//
// Layer: plain data. It imports nothing of hcpsnap but internal helpers.
package checkpoint
