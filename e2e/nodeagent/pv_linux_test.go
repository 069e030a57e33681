package nodeagent

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestEnsureFilesystem prepares a real local volume: an ext4 file system of the given size, loop-mounted, that
// stays mounted (and keeps its data) when prepared again, and that refuses writes beyond its size.
func TestEnsureFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	path := filepath.Join(t.TempDir(), "pv")
	t.Cleanup(func() { _ = unix.Unmount(path, unix.MNT_DETACH) })
	const size = 16 << 20
	if err := ensureFilesystem(path, size); err != nil {
		t.Fatal(err)
	}
	if mounted, err := isMountPoint(path); err != nil || !mounted {
		t.Fatalf("%s is not mounted (%v)", path, err)
	}
	if err := os.WriteFile(filepath.Join(path, "kept"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ensureFilesystem(path, size); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(path, "kept")); err != nil {
		t.Fatalf("data lost when prepared again: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	if total := int64(st.Blocks) * st.Bsize; total > size || total < size/2 {
		t.Fatalf("file system of %d bytes, want close to and at most %d", total, size)
	}
	f, err := os.Create(filepath.Join(path, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := 0; i <= size>>20; i++ {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing %d MiB into a %d MiB volume: %v, want ENOSPC", size>>20+1, size>>20, err)
	}
	f.Close()
	if err := unix.Unmount(path, 0); err != nil {
		t.Fatal(err)
	}
}
