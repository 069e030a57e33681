// Package etcdsnap owns what hcpsnap knows of the etcd snapshot file format:
// a bolt database followed by the 32-byte SHA-256 of that database, which
// etcdctl appends and etcdutl checks on restore. Both the upload and the
// restore verification check a stream against it on the fly.
//
// Layer: adapter (the etcd snapshot stream). It imports no workflow.
package etcdsnap
