package nodeagent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// devices are the host device nodes bind-mounted into a container's /dev, as runtimes create them.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// setupImageRoot builds the container's root file system from spec.Root in the helper's namespace (the scratch
// tmpfs is mounted) and makes it the root; see sandboxRoot.
func setupImageRoot(spec *sandboxSpec) error {
	r := spec.Root
	base := filepath.Join(spec.ScratchDir, "root")
	root, upper, work := filepath.Join(base, "mnt"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{root, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(upper, 0o755); err != nil {
		return err
	}
	opts := "lowerdir=" + escapeOverlayPath(r.RootFS) + ",upperdir=" + escapeOverlayPath(upper) +
		",workdir=" + escapeOverlayPath(work)
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("root overlay on %s: %w", r.RootFS, err)
	}
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	dev := filepath.Join(root, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, d := range devices {
		if err := bindFile(filepath.Join("/dev", d), filepath.Join(dev, d)); err != nil {
			return fmt.Errorf("/dev/%s: %w", d, err)
		}
	}
	var binds []string
	for _, m := range sortMounts(spec.Mounts) {
		if err := mountInRoot(root, m, binds); err != nil {
			return fmt.Errorf("mount %s at %s: %w", m.Source, m.Target, err)
		}
		binds = append(binds, m.Target)
	}
	wd := filepath.Clean("/" + spec.WorkingDir)
	if err := noSymlinkBelow(root, wd); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, wd), 0o755); err != nil {
		return fmt.Errorf("working dir: %w", err)
	}
	if r.ReadOnly {
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
		if err := unix.Mount("", root, "", flags, ""); err != nil {
			return fmt.Errorf("make the root read-only: %w", err)
		}
	}
	// pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the new root, with
	// no folder of the image used for the old one.
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := os.Chdir(wd); err != nil {
		return fmt.Errorf("working dir: %w", err)
	}
	return nil
}

// mountInRoot bind-mounts m at its target inside root. A missing mount point is created in the root's overlay
// (never in a volume mounted earlier, binds, nor through a symbolic link of the image), as a folder or an empty
// file like the source.
func mountInRoot(root string, m sandboxMount, binds []string) error {
	srcInfo, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	if err := noSymlinkBelow(root, m.Target); err != nil {
		return err
	}
	target := filepath.Join(root, m.Target)
	fi, err := os.Stat(target)
	switch {
	case err == nil:
		if fi.IsDir() != srcInfo.IsDir() {
			return errors.New("one is a folder, the other is not")
		}
	case errors.Is(err, os.ErrNotExist):
		for _, b := range binds {
			if within(m.Target, b) {
				return fmt.Errorf("its mount point would be created inside the volume mounted at %s", b)
			}
		}
		if srcInfo.IsDir() {
			err = os.MkdirAll(target, 0o755)
		} else {
			err = touch(target)
		}
		if err != nil {
			return err
		}
	default:
		return err
	}
	if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if m.ReadOnly {
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
		if err := unix.Mount("", target, "", flags, ""); err != nil {
			return fmt.Errorf("remount read-only: %w", err)
		}
	}
	return nil
}

// bindFile bind-mounts the file src on a new empty file dst.
func bindFile(src, dst string) error {
	if err := touch(dst); err != nil {
		return err
	}
	return unix.Mount(src, dst, "", unix.MS_BIND, "")
}

// touch creates an empty file and its parent folders.
func touch(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// becomeUser switches the helper to the container's user and groups, just before it executes the command: the
// supplementary groups first, then the group, then the user, which drops every capability. The syscall package
// changes every thread of the process. A change of user clears the parent-death signal, so it is set again.
func becomeUser(c credentials, ppid int) error {
	groups := make([]int, len(c.Groups))
	for i, g := range c.Groups {
		groups[i] = int(g)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(c.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", c.GID, err)
	}
	if err := syscall.Setuid(int(c.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", c.UID, err)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("parent-death signal: %w", err)
	}
	if os.Getppid() != ppid {
		return errors.New("the node agent is gone")
	}
	return nil
}
