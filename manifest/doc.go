// Package manifest owns the formats a backup leaves in the bucket besides
// the snapshot: the manifest that describes a backup (written by the backup
// workflow, read by restore and `hcpsnap backups`) and the key bundle that
// holds the Secrets a restore needs. Both are versioned JSON.
//
// Layer: plain data. It imports nothing of hcpsnap but internal helpers.
package manifest
