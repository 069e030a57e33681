// Package runbook is the engine layer: it runs a workflow given as an
// ordered list of plain Step values, generic over the state the workflow
// carries (Engine[S] running []Step[S]), and renders the same list as the
// runbook a person would follow for --dry-run.
//
// The engine owns the order of the steps, their records in the run's
// checkpoint, and the undo: when a step fails or the run is interrupted, the
// counterpart of every change made runs, those that restore service first,
// each under its own deadline, even when the checkpoint cannot be saved. A
// resumed run makes again every change a remaining step needs, and runs
// again every step that used the outputs of a step that runs again.
//
// It knows nothing of HyperShift, etcd or S3: the backup workflow (package
// steps) supplies the steps and the state. Layer: engine; it imports only
// plain data (checkpoint) and internal helpers, never a workflow.
package runbook
