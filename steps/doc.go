// Package steps owns the backup workflow: the State that every step
// receives, the backup steps themselves, from preflight to write-manifest,
// the protocol they speak with the etcd pod (podscript.go, podreader.go),
// and the lock on the HostedCluster (saver.go). The engine that runs the
// steps, records them and undoes their changes is package runbook; steps
// declares each step's brackets, needs and uses, and runbook acts on them.
//
// Steps reach the cluster, the pods and the bucket only through the narrow
// interfaces declared here, over types the adapters own (s3.ObjectInfo, ...),
// so that a dry run, a fake or the real thing can stand behind them.
//
// Layer: workflow. It imports the engine (runbook), the adapters (s3,
// internal/kube) and plain data (checkpoint, manifest); none of those
// imports it.
package steps
