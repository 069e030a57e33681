package management

import (
	_ "embed"
	"regexp"
)

// The snapshot script, as it is installed on every master. It reads its
// settings from the environment that the service unit's Environment= lines
// set (see the Env* names).
//
//go:embed etcd-snapshot.sh
var script []byte

// Script returns the snapshot script's bytes.
func Script() []byte { return append([]byte(nil), script...) }

// Where the MachineConfig installs the script and its units on the node.
const (
	ScriptPath  = "/usr/local/bin/hcpsnap-etcd-snapshot.sh"
	ServiceName = "hcpsnap-etcd-snapshot.service"
	TimerName   = "hcpsnap-etcd-snapshot.timer"
)

// The script's environment.
const (
	// EnvHost is the node name of the one master that takes snapshots; the
	// script exits 0 at once on any other.
	EnvHost = "HOST"
	// EnvTargetDir is the folder that receives one folder per run.
	EnvTargetDir = "TGT_DIR"
	// EnvKeep is how many complete backups the script keeps (at least 1).
	EnvKeep = "KEEP"
	// EnvAllowTmpfs, "true", lets the target be under /tmp.
	EnvAllowTmpfs = "ALLOW_TMPFS"
	// EnvClusterBackup overrides the path of OpenShift's cluster-backup.sh
	// (DefaultClusterBackup); tests use it for a stand-in.
	EnvClusterBackup = "CLUSTER_BACKUP"
)

// DefaultClusterBackup is OpenShift's backup script on every master.
const DefaultClusterBackup = "/usr/local/bin/cluster-backup.sh"

// PartialSuffix marks the folder of a run in progress, or of one that failed
// or was cut short; a run renames its folder without it once
// cluster-backup.sh succeeded.
const PartialSuffix = ".partial"

// RemovingSuffix marks a complete folder that retention is removing: the
// script renames a folder out of the complete names before deleting it, so a
// removal cut short never leaves a half-deleted folder that looks complete.
// The next run removes what is left, like a PartialSuffix folder.
const RemovingSuffix = ".removing"

// LockName is the file in the target folder that a run holds (flock) from
// before it cleans up until it ends; pull-node leaves it alone.
const LockName = ".hcpsnap-etcd-snapshot.lock"

// The script's exit codes besides 0 (done, or not the node named by HOST).
const (
	// ExitFailed: the run failed (cluster-backup.sh failed or wrote
	// something else than expected, another run holds the lock, too little
	// free space, a removal failed); every complete folder is left as it was,
	// apart from the removals retention logged.
	ExitFailed = 1
	// ExitBadSetting: a setting is invalid; nothing was touched.
	ExitBadSetting = 2
)

// completeFolder is the name of a complete run's folder: its start in UTC in
// manifest.TimestampFormat.
var completeFolder = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z$`)

// IsCompleteFolder reports whether name is the name of a complete run's
// folder (the script's retention and pull-node read only those).
func IsCompleteFolder(name string) bool { return completeFolder.MatchString(name) }
