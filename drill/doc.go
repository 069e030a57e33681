// Package drill proves that a stored backup restores: it streams the
// snapshot into a scratch folder checking it against the manifest, restores
// it with etcd's own restore code exactly as HyperShift's etcd-init does,
// starts an embedded etcd on loopback on the result, and inspects what it
// serves (revision, keys, objects per resource, namespaces, and whether the
// key bundle decrypts the stored Secrets). The scratch folder is always
// removed.
//
// Layer: workflow (4). It reads backups through restore's Store and Load,
// and imports adapters (internal/etcdsnap) and data (manifest) only.
package drill
