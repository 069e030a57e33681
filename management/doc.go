// Package management owns the backups of the management cluster's own etcd:
// the MachineConfig that makes one master take `cluster-backup.sh` snapshots
// on a systemd timer, the script that timer runs, and the rules for the folder
// on the node where they land, which `hcpsnap pull-node` reads back.
//
// On the node, each run of the script writes one folder
// <target>/<UTC time in manifest.TimestampFormat>/ holding what OpenShift's
// cluster-backup.sh writes (snapshot_<time>.db and
// static_kuberesources_<time>.tar.gz). A run works in <folder>.partial and
// renames it when cluster-backup.sh succeeded, so a folder without the
// suffix is complete.
//
// Layer: workflow (management), beside schedule.
package management
