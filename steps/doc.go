// Package steps owns the backup workflow: the engine that runs an ordered
// list of plain Step values, records each in the run's checkpoint and undoes
// every change when a step fails or the run is interrupted; the State that
// every step receives; and the backup steps themselves, from preflight to
// write-manifest. Steps reach the cluster, the pods and the bucket only
// through the narrow interfaces declared here, so that a dry run, a fake or
// the real thing can stand behind them.
package steps
