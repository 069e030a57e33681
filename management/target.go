package management

import (
	"fmt"
	"path"
	"strings"
)

// DefaultTargetDir is where snapshots land on the node unless told: the core
// user's home survives reboots and upgrades, and is what OpenShift's
// documentation uses for cluster-backup.sh.
const DefaultTargetDir = "/home/core/etcd-snapshots"

// allowedRoots are the places a target folder may be under: persistent,
// writable on RHCOS, and not managed by the Machine Config Operator.
var allowedRoots = []string{"/home/core", "/mnt", "/var"}

// tmpRoot is tmpfs on RHCOS: snapshots there are lost at reboot.
const tmpRoot = "/tmp"

// forbidden are folders under an allowed root that a target must never be in
// (or hold): etcd's own data, the kubelet's and the container runtime's
// state, /usr/local (RHCOS keeps it in /var/usrlocal) and the /var links
// into the tmpfs /run.
var forbidden = []string{
	"/var/lib/etcd", "/var/lib/kubelet", "/var/lib/containers", "/var/lib/cni",
	"/var/usrlocal", "/var/run", "/var/lock", "/var/lib/rpm-ostree", "/var/lib/ostree",
}

// CheckTargetDir checks a target folder for snapshots on a master: an
// absolute, clean path of plain characters, strictly under /home/core, /mnt
// or /var (outside the folders of forbidden), or under /tmp when allowTmpfs.
// warning is non-empty for /tmp. The error says what to change; the caller
// names the flag.
func CheckTargetDir(dir string, allowTmpfs bool) (warning string, err error) {
	switch {
	case dir == "":
		return "", fmt.Errorf("is empty: give a folder under %s", strings.Join(allowedRoots, ", "))
	case !path.IsAbs(dir):
		return "", fmt.Errorf("%q is not an absolute path: give a folder under %s", dir, strings.Join(allowedRoots, ", "))
	case path.Clean(dir) != dir:
		return "", fmt.Errorf("%q is not a clean path: write it as %q", dir, path.Clean(dir))
	}
	for _, r := range dir {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r)) {
			return "", fmt.Errorf("%q holds %q: use letters, digits and . _ - only (the path goes into a systemd unit and a shell script)", dir, r)
		}
	}
	for _, f := range forbidden {
		if under(dir, f) || dir == f || under(f, dir) {
			return "", fmt.Errorf("%q is or holds %s, which the node itself uses: pick another folder, such as %s", dir, f, DefaultTargetDir)
		}
	}
	if under(dir, tmpRoot) {
		if !allowTmpfs {
			return "", fmt.Errorf("%q is on /tmp, a tmpfs that a reboot empties: pick a folder under %s, or allow it with --allow-tmpfs", dir, strings.Join(allowedRoots, ", "))
		}
		return fmt.Sprintf("%s is on /tmp, a tmpfs: its snapshots are lost when the node reboots (the Machine Config Operator reboots masters to apply this MachineConfig), so pull them off the node promptly", dir), nil
	}
	for _, r := range allowedRoots {
		if under(dir, r) {
			return "", nil
		}
	}
	return "", fmt.Errorf("%q is outside the allowed places: pick a folder under %s (or /tmp with --allow-tmpfs)", dir, strings.Join(allowedRoots, ", "))
}

// under reports whether p is strictly inside folder root.
func under(p, root string) bool { return strings.HasPrefix(p, root+"/") }
