// Package etcdclient owns hcpsnap's direct conversation with the etcd members
// of a hosted control plane: it reads the client certificate and CA from the
// control plane's namespace into memory, dials a member's client port over a
// caller-supplied connection (a port-forward through the apiserver), and asks
// the member for its status or a snapshot stream with go.etcd.io/etcd/client/v3.
//
// Layer: adapter (etcd over port-forward). It imports no workflow.
package etcdclient
