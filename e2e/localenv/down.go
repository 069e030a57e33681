package localenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/log"
	"golang.org/x/sys/unix"

	"github.com/hcpsnap/hcpsnap/e2e/mountinfo"
)

// Down stops every process of the environment and removes its state, keeping
// the logs. It then checks that no process, mount or network namespace of the
// environment is left, and fails if one is.
func Down(cfg Config, logger *log.Logger) error {
	logger.Info("stopping the local environment", "dir", cfg.Dir)
	err := cfg.stopAll(15 * time.Second)
	// The etcd members' data volumes are file systems mounted below the
	// state folder; they go once nothing runs in them.
	if umErr := cfg.unmountAll(); umErr != nil {
		err = errors.Join(err, umErr)
	}
	for _, d := range []string{"pki", "etcd", "minio", "nodeagent", "fixture", "pids", "env", "kubeconfig"} {
		if rmErr := os.RemoveAll(cfg.path(d)); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
	}
	if leaks := Leaks(cfg); len(leaks) > 0 {
		err = errors.Join(err, fmt.Errorf("left behind: %s", strings.Join(leaks, "; ")))
	}
	if err == nil {
		logger.Info("environment stopped; nothing left behind", "logs", cfg.path("logs"))
	}
	return err
}

// Leaks lists what of the environment survives: processes started from its
// binaries or state folder, mounts of its state folder in this mount namespace,
// and network namespaces named after it.
func Leaks(cfg Config) []string {
	var leaks []string
	self := os.Getpid()
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscanf(d.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err != nil || len(cmdline) == 0 {
			continue
		}
		cl := strings.ReplaceAll(string(cmdline), "\x00", " ")
		if strings.Contains(cl, cfg.Dir) || strings.HasPrefix(cl, cfg.BinDir+"/") {
			leaks = append(leaks, fmt.Sprintf("process %d (%s)", pid, truncate(cl, 80)))
		}
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, cfg.Dir) {
				leaks = append(leaks, "mount "+truncate(line, 120))
			}
		}
	}
	if backing, err := filepath.Glob("/sys/block/loop*/loop/backing_file"); err == nil {
		for _, f := range backing {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), cfg.Dir) {
				leaks = append(leaks, "loop device "+filepath.Base(filepath.Dir(filepath.Dir(f)))+" on "+strings.TrimSpace(string(b)))
			}
		}
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "hcpsnap") {
				leaks = append(leaks, "network namespace "+e.Name())
			}
		}
	}
	return leaks
}

// unmountAll unmounts every mount point below the state folder in this mount
// namespace, deepest first: the data volumes the node agent mounted. A loop
// device mounted by mount(8) is released with its last mount.
func (c Config) unmountAll() error {
	all, err := mountinfo.Points()
	if err != nil {
		return err
	}
	var points []string
	for _, p := range all {
		if strings.HasPrefix(p, c.Dir+"/") {
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
