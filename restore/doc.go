// Package restore owns the render patcher: the pure step that turns the
// output of `hypershift create cluster <platform> ... --render` into a render
// whose HostedCluster restores its etcd from an hcpsnap backup.
//
// HyperShift restores etcd only when a HostedCluster is created, so the
// patcher edits the render before it is applied: it sets
// spec.etcd.managed.storage.restoreSnapshotURL to the presigned URL of the
// snapshot, puts the saved AES-CBC key into the Secret the HostedCluster
// names (the restored data is encrypted with it), and adds the control plane
// signing Secrets of the key bundle in the new control plane namespace.
// When the backup's manifest says the data is encrypted with KMS, no key is
// put anywhere: the patcher checks that the render names every KMS key the
// backup recorded (see checkKMS) and leaves its KMS configuration as it is.
//
// The patcher does no I/O. It splits the YAML stream at document boundaries
// itself, so every document it does not change is written back byte for
// byte, comments included; the documents it changes are edited as
// gopkg.in/yaml.v3 nodes, which keeps their key order and most comments.
// Neither the URL nor any secret value ever appears in an error or a Report.
//
// Layer: workflow (restore). It imports adapters (s3) and plain data
// (manifest), never the backup workflow or the command line.
package restore
