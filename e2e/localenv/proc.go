package localenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is a process of the environment that outlives `localenv up`.
type daemon struct {
	name string
	bin  string
	args []string
	env  []string
}

// start runs the daemon in a new session (so that it and everything it starts
// can be found again by session ID), logs to logs/<name>.log and records its
// PID in pids/<name>.pid.
func (c Config) start(d daemon) error {
	if err := os.MkdirAll(c.path("logs"), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(c.path("pids"), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(c.path("logs", d.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(d.bin, d.args...)
	cmd.Env = append(os.Environ(), d.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	pid := cmd.Process.Pid
	// Reap the child when it exits, so that a daemon that dies during `up` does
	// not linger as a zombie that still looks alive to kill(pid, 0).
	go func() { _ = cmd.Wait() }()
	spec, err := json.Marshal(daemonSpec{Bin: d.bin, Args: d.args, Env: d.env})
	if err != nil {
		return err
	}
	// The spec lets a test stop and start the daemon again (a restarted S3
	// server or apiserver); it may hold credentials, hence 0600.
	if err := os.WriteFile(c.path("pids", d.name+".json"), spec, 0o600); err != nil {
		return err
	}
	return os.WriteFile(c.path("pids", d.name+".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o600)
}

// daemonSpec is how a daemon was started.
type daemonSpec struct {
	Bin  string   `json:"bin"`
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"`
}

// Stop stops one daemon of a running environment and everything it started,
// keeping what is needed to start it again with Start.
func (c Config) Stop(name string) error {
	pid, err := c.pid(name)
	if err != nil {
		return fmt.Errorf("%s is not running in %s: %w", name, c.Dir, err)
	}
	return stopSession(pid, 15*time.Second)
}

// Start starts again a daemon stopped by Stop, with the same command line.
func (c Config) Start(name string) error {
	if c.alive(name) {
		return fmt.Errorf("%s is already running", name)
	}
	data, err := os.ReadFile(c.path("pids", name+".json"))
	if err != nil {
		return fmt.Errorf("%s was never started in %s: %w", name, c.Dir, err)
	}
	var spec daemonSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	return c.start(daemon{name: name, bin: spec.Bin, args: spec.Args, env: spec.Env})
}

// alive reports whether the daemon recorded under name still runs.
func (c Config) alive(name string) bool {
	pid, err := c.pid(name)
	if err != nil {
		return false
	}
	return len(sessionMembers(pid)) > 0 && processAlive(pid)
}

func (c Config) pid(name string) (int, error) {
	b, err := os.ReadFile(c.path("pids", name+".pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// stopOrder stops the node agent first, so that it ends its pods' processes
// itself, and the stores last.
var stopOrder = []string{"nodeagent", "operator", "kube-controller-manager", "kube-apiserver", "minio", "etcd"}

// stopAll stops every recorded daemon and every process of its session:
// SIGTERM, then SIGKILL after grace. It returns what it could not stop.
func (c Config) stopAll(grace time.Duration) error {
	entries, _ := filepath.Glob(c.path("pids", "*.pid"))
	names := map[string]bool{}
	for _, e := range entries {
		names[strings.TrimSuffix(filepath.Base(e), ".pid")] = true
	}
	var ordered []string
	for _, n := range stopOrder {
		if names[n] {
			ordered = append(ordered, n)
			delete(names, n)
		}
	}
	rest := make([]string, 0, len(names))
	for n := range names {
		rest = append(rest, n)
	}
	sort.Strings(rest)
	ordered = append(ordered, rest...)

	var errs []error
	for _, name := range ordered {
		pid, err := c.pid(name)
		if err == nil {
			err = stopSession(pid, grace)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", name, err))
			continue
		}
		_ = os.Remove(c.path("pids", name+".pid"))
		_ = os.Remove(c.path("pids", name+".json"))
	}
	return errors.Join(errs...)
}

// stopSession signals every process whose session ID is sid.
func stopSession(sid int, grace time.Duration) error {
	signalAll(sid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if len(sessionMembers(sid)) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	signalAll(sid, syscall.SIGKILL)
	for i := 0; i < 50; i++ {
		if len(sessionMembers(sid)) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("processes %v of session %d survive SIGKILL", sessionMembers(sid), sid)
}

func signalAll(sid int, sig syscall.Signal) {
	for _, pid := range sessionMembers(sid) {
		_ = syscall.Kill(pid, sig)
	}
}

// sessionMembers lists the live (non-zombie) processes of session sid by
// reading /proc/<pid>/stat, whose sixth field is the session ID.
func sessionMembers(sid int) []int {
	dirs, _ := os.ReadDir("/proc")
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name (field 2) is in parentheses and may hold spaces.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if s, err := strconv.Atoi(f[3]); err == nil && s == sid {
			pids = append(pids, pid)
		}
	}
	return pids
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// Running reports whether any daemon of the environment is recorded and alive.
func Running(cfg Config) bool {
	entries, _ := filepath.Glob(cfg.path("pids", "*.pid"))
	for _, e := range entries {
		if cfg.alive(strings.TrimSuffix(filepath.Base(e), ".pid")) {
			return true
		}
	}
	return false
}
