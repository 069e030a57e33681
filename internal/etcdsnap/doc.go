// Package etcdsnap owns what hcpsnap knows of the etcd snapshot file format:
// a bolt database followed by the 32-byte SHA-256 of that database, which
// etcdctl appends and etcdutl checks on restore. Both the upload and the
// restore verification check a stream against it on the fly. The Scanner
// reads what `etcdutl snapshot status` reports (revision, size, storage
// version) from the same stream with memory that does not grow with the
// database, reading the few pages it needs back from the stored object; it
// knows bbolt's page layout itself rather than importing bbolt, which needs
// the whole file.
//
// Layer: adapter (the etcd snapshot stream). It imports no workflow.
package etcdsnap
