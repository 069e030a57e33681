package localenv

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/log"
)

// Down stops every process of the environment and removes its state, keeping
// the logs. It then checks that no process, mount or network namespace of the
// environment is left, and fails if one is.
func Down(cfg Config, logger *log.Logger) error {
	logger.Info("stopping the local environment", "dir", cfg.Dir)
	err := cfg.stopAll(15 * time.Second)
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
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "hcpsnap") {
				leaks = append(leaks, "network namespace "+e.Name())
			}
		}
	}
	return leaks
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
