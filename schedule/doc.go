// Package schedule owns scheduled backups: what a management cluster needs
// to run `hcpsnap backup` by itself, and the life of those objects there.
//
// Render turns a Spec into the objects of one schedule: a CronJob whose pod
// runs the hcpsnap image with `backup` and the options passed through, a
// ServiceAccount, a ClusterRole holding exactly the rules of deploy/rbac.yaml's
// hcpsnap-backup, and the bindings that grant it where the backup works (the
// HostedCluster's namespace and its control plane namespace, or the whole
// cluster for a selector, whose future clusters' namespaces are unknown).
// RenderPullNode and RenderVerify render the other scheduled jobs from the
// same pod: `hcpsnap pull-node`, and the restore drill `hcpsnap verify
// --drill`, which reads S3 only and so gets a ServiceAccount without an API
// token and no RBAC at all.
// Every object carries the ownership labels (LabelManagedBy, LabelSchedule,
// LabelScheduleNamespace); Apply, List and Delete act only on objects that
// carry them, so a same-named object someone else made is never changed.
//
// The rendering does no I/O; Apply, List and Delete reach the cluster only
// through client-go's kubernetes.Interface.
//
// Layer: workflow (schedule). It imports nothing of hcpsnap: the command
// line reads the rules from deploy (plain data) and hands them over in Spec.
package schedule
