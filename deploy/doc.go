// Package deploy owns the Kubernetes manifests shipped with hcpsnap:
// rbac.yaml, the least-privilege ClusterRoles. The file is embedded, so
// what `hcpsnap schedule` renders for a scheduled backup's ServiceAccount
// is read from the very file people apply by hand: a change to rbac.yaml
// flows into every schedule rendered afterwards.
//
// Layer: plain data. It imports nothing of hcpsnap.
package deploy
