package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hcpsnap/hcpsnap/e2e/mountinfo"
)

// claimedVolume is the PersistentVolume bound to a pod's PersistentVolumeClaim, as far as the agent mounts it.
type claimedVolume struct {
	// PV is the PersistentVolume's name.
	PV string
	// Path is spec.local.path or spec.hostPath.path.
	Path string
	// Local is true for a local volume: a file system of Bytes bytes that the agent prepares at Path.
	Local bool
	// Bytes is the PersistentVolume's storage capacity.
	Bytes int64
}

// claimResolver finds the PersistentVolume bound to a claim through the apiserver.
type claimResolver struct {
	client kubernetes.Interface
}

// resolve returns the volume bound to the claim, or an error while the claim is not bound (the pod's sync is then
// retried, as a kubelet waits for its volumes).
func (r *claimResolver) resolve(ctx context.Context, namespace, claim string) (claimedVolume, error) {
	pvc, err := r.client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return claimedVolume{}, fmt.Errorf("claim %s: %w", claim, err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return claimedVolume{}, fmt.Errorf("claim %s is not bound to a volume yet (phase %q)", claim, pvc.Status.Phase)
	}
	pv, err := r.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return claimedVolume{}, fmt.Errorf("volume %s of claim %s: %w", pvc.Spec.VolumeName, claim, err)
	}
	capacity := pv.Spec.Capacity[corev1.ResourceStorage]
	v := claimedVolume{PV: pv.Name, Bytes: capacity.Value()}
	switch {
	case pv.Spec.Local != nil:
		v.Path, v.Local = pv.Spec.Local.Path, true
	case pv.Spec.HostPath != nil:
		v.Path = pv.Spec.HostPath.Path
	default:
		return claimedVolume{}, fmt.Errorf("volume %s: only local and hostPath volumes are supported", pv.Name)
	}
	if !filepath.IsAbs(v.Path) {
		return claimedVolume{}, fmt.Errorf("volume %s: path %q is not absolute", pv.Name, v.Path)
	}
	if v.Local && v.Bytes <= 0 {
		return claimedVolume{}, fmt.Errorf("volume %s has no storage capacity", pv.Name)
	}
	return v, nil
}

// volumeMu serialises the preparation of file systems.
var volumeMu sync.Mutex

// ensureFilesystem makes path the mount point of an ext4 file system of size bytes, as the disk behind a local
// PersistentVolume would be: a sparse image file next to it (path + ".img") formatted once and loop-mounted. When
// path is already a mount point it is used as it is, so the data lives on across pod restarts and agent restarts,
// as a volume's data does; `localenv down` unmounts it. A full file system then fails writes with ENOSPC, as a full
// PersistentVolume does.
func ensureFilesystem(path string, size int64) error {
	volumeMu.Lock()
	defer volumeMu.Unlock()
	mounted, err := isMountPoint(path)
	if err != nil || mounted {
		return err
	}
	img := path + ".img"
	if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
		if err := createImage(img, size); err != nil {
			_ = os.Remove(img)
			return err
		}
	} else if err != nil {
		return err
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	// mount(8) finds a free loop device and sets it to clear itself on unmount.
	return runTool("mount", "-t", "ext4", "-o", "loop,nosuid,nodev", img, path)
}

func createImage(img string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(img), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// No reserved blocks, so that the file system's free space is what the capacity promises less ext4's own
	// metadata; lazy initialisation keeps formatting a large sparse image instant.
	return runTool("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", img)
}

// runTool runs a system tool, found on PATH or in /usr/sbin or /sbin, and returns its output in the error.
func runTool(name string, args ...string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
				path, err = filepath.Join(dir, name), nil
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%s is needed for local volumes: %w", name, err)
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// isMountPoint reports whether path is a mount point in the agent's mount namespace.
func isMountPoint(path string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	return slices.Contains(mountinfo.Parse(string(data)), filepath.Clean(path)), nil
}
