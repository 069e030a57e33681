// Package pullnode owns `hcpsnap pull-node`: copying the management
// cluster's own etcd snapshots off the master that takes them, without ssh.
//
// The snapshot script (package management) leaves complete folders
// <target>/<UTC timestamp>/ on the node, each holding cluster-backup.sh's
// snapshot_<time>.db and static_kuberesources_<time>.tar.gz. Pull starts a
// short-lived pod on that node running hcpsnap's own image, with the target
// folder mounted read-only (a hostPath, and nothing else privileged but the
// root user that reading root's 0600 files needs); the pod's container only
// waits. Through pods/exec, Pull asks hcpsnap in the pod for the complete
// folders (List) and streams each file (Cat) straight into a multipart
// upload, the snapshot checked against etcd's SHA-256 on the way like a
// backup's. Each folder becomes the backup <prefix>/_management/<timestamp>/
// (manifest.ManagementSeries): snapshot.db, static_kuberesources.tar.gz and,
// last, manifest.json. A folder whose manifest is in the bucket is not
// copied again, so a second run uploads nothing. The pod is deleted at the
// end, after a failure and after Ctrl-C too; its activeDeadlineSeconds ends
// it even if hcpsnap is killed.
//
// Layer: workflow (pull-node), beside backup and prune. It imports adapters
// (s3 values, internal/etcdsnap), plain data (manifest) and the rules of the
// node folder (management, a workflow of the same layer).
package pullnode
