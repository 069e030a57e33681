// Package operator is the local environment's stand-in for the HyperShift
// operator and control-plane operator. It owns exactly the two behaviours
// hcpsnap relies on, and nothing else:
//
//   - it mirrors HostedCluster spec.pausedUntil into the HostedControlPlane of
//     the same name in the namespace <namespace>-<name>, and reports the
//     HostedCluster condition ReconciliationActive as HyperShift does;
//   - while the HostedCluster is not paused, it scales the Deployments named in
//     the HostedControlPlane annotation localenv.hcpsnap.io/desired-replicas back
//     to their desired replicas through the scale subresource, as the
//     control-plane operator would put back a Deployment it owns.
//
// Pausing follows HyperShift's rules (see ParsePausedUntil), so a backup tool
// that pauses reconciliation before scaling the API servers down sees the
// same behaviour here as on a real management cluster.
package operator
