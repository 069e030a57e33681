package nodeagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	// backoffMin and backoffMax bound the delay before a container is restarted; a run longer than backoffReset
	// starts the sequence again from backoffMin.
	backoffMin   = time.Second
	backoffMax   = 20 * time.Second
	backoffReset = 30 * time.Second
)

// podRuntime is a pod bound to this node whose folder has been prepared: its processes, their state and the
// sandbox every process of the pod starts in.
type podRuntime struct {
	a         *agent
	key       string
	uid       types.UID
	name      string
	namespace string
	dir       string
	ip        string
	// ctx is cancelled when the pod stops: no process is started or restarted afterwards.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	pod        *corev1.Pod
	startTime  time.Time
	init       []*containerRun
	containers []*containerRun
	initDone   bool
	// procs are the process groups of the pod that run now (containers, execs, probes), by group ID.
	procs map[int]struct{}
}

// containerRun is a container of a running pod. Its env and mounts are computed once, when the pod starts, and
// shared by the container's process, its execs and its probes.
type containerRun struct {
	spec corev1.Container
	env  []envVar
	// argv is the command before $(VAR) expansion: command and args, or for an image what Kubernetes' rules make
	// of them and the image's Entrypoint and Cmd; empty when the container runs nothing.
	argv       []string
	workingDir string
	mounts     []sandboxMount
	// root is the image the container runs from; nil for host binaries.
	root *sandboxRoot
	pid  int
	snap containerSnapshot
}

// snapshot copies what the status is computed from.
func (rt *podRuntime) snapshot() podSnapshot {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	s := podSnapshot{PodIP: rt.ip, HostIP: rt.a.hostIP, StartTime: rt.startTime, InitDone: rt.initDone}
	for _, c := range rt.init {
		s.InitContainers = append(s.InitContainers, c.snap)
	}
	if rt.initDone {
		for _, c := range rt.containers {
			s.Containers = append(s.Containers, c.snap)
		}
	}
	return s
}

// update changes a container's snapshot under the lock and asks for a status update.
func (rt *podRuntime) update(c *containerRun, f func(*containerSnapshot)) {
	rt.mu.Lock()
	f(&c.snap)
	rt.mu.Unlock()
	rt.a.enqueue(rt.key)
}

// container finds a container (or init container) by name.
func (rt *podRuntime) container(name string) *containerRun {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, c := range append(append([]*containerRun{}, rt.containers...), rt.init...) {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

// start runs the init containers one after the other, then every container, in the background.
func (rt *podRuntime) start() {
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		for _, ic := range rt.init {
			if !rt.runToCompletion(ic) {
				return
			}
		}
		rt.mu.Lock()
		rt.initDone = true
		rt.mu.Unlock()
		rt.a.enqueue(rt.key)
		for _, c := range rt.containers {
			if c.spec.ReadinessProbe != nil {
				rt.wg.Add(1)
				go func() {
					defer rt.wg.Done()
					rt.probeLoop(c)
				}()
			}
			if len(c.argv) == 0 {
				// A container without a command runs nothing and counts as running.
				rt.update(c, func(s *containerSnapshot) {
					s.Running, s.StartedAt, s.Waiting = true, time.Now(), ""
					s.ProbeReady = c.spec.ReadinessProbe == nil
				})
				continue
			}
			rt.wg.Add(1)
			go func() {
				defer rt.wg.Done()
				rt.supervise(c)
			}()
		}
	}()
}

// runToCompletion runs an init container until it succeeds; it reports false when the pod stopped or the container
// failed for good (restartPolicy Never).
func (rt *podRuntime) runToCompletion(c *containerRun) bool {
	backoff := backoffMin
	for {
		rec := rt.runOnce(c)
		if rec.ExitCode == 0 && rt.ctx.Err() == nil {
			rt.update(c, func(s *containerSnapshot) { s.Final = true })
			return true
		}
		if rt.ctx.Err() != nil {
			return false
		}
		if rt.pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			rt.update(c, func(s *containerSnapshot) { s.Final = true })
			return false
		}
		if !rt.backoff(c, &backoff, rec) {
			return false
		}
	}
}

// supervise runs a container and restarts it as its pod's restartPolicy says, until the pod stops.
func (rt *podRuntime) supervise(c *containerRun) {
	backoff := backoffMin
	for {
		rec := rt.runOnce(c)
		if rt.ctx.Err() != nil {
			return
		}
		policy := rt.pod.Spec.RestartPolicy
		if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && rec.ExitCode == 0) {
			rt.update(c, func(s *containerSnapshot) { s.Final = true })
			return
		}
		if !rt.backoff(c, &backoff, rec) {
			return
		}
	}
}

// backoff waits before a restart, showing CrashLoopBackOff meanwhile; it reports false when the pod stopped.
func (rt *podRuntime) backoff(c *containerRun, delay *time.Duration, rec exitRecord) bool {
	if rec.FinishedAt.Sub(rec.StartedAt) > backoffReset {
		*delay = backoffMin
	}
	rt.update(c, func(s *containerSnapshot) {
		s.Waiting, s.Message = "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container", *delay)
	})
	select {
	case <-rt.ctx.Done():
		return false
	case <-time.After(*delay):
	}
	*delay = min(*delay*2, backoffMax)
	rt.update(c, func(s *containerSnapshot) { s.RestartCount++ })
	return true
}

// runOnce starts the container's process, appending its output to the container's log, and waits for it.
func (rt *podRuntime) runOnce(c *containerRun) exitRecord {
	started := time.Now()
	fail := func(err error) exitRecord {
		rec := exitRecord{ExitCode: 128, StartedAt: started, FinishedAt: time.Now()}
		rt.a.log.Error("container did not start", "pod", rt.key, "container", c.spec.Name, "err", err)
		rt.update(c, func(s *containerSnapshot) {
			s.Running, s.LastExit, s.Message = false, &rec, err.Error()
		})
		return rec
	}
	logFile, err := os.OpenFile(rt.logPath(c.spec.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	argv := expandAll(c.argv, c.env)
	cmd, err := rt.sandboxCommand(c, argv, c.workingDir)
	if err != nil {
		return fail(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if rt.ctx.Err() != nil {
		return exitRecord{StartedAt: started, FinishedAt: started}
	}
	p, err := rt.spawn(cmd, false)
	if err != nil {
		return fail(err)
	}
	rt.a.log.Info("container started", "pod", rt.key, "container", c.spec.Name, "pid", p.pid)
	rt.mu.Lock()
	c.pid = p.pid
	rt.mu.Unlock()
	rt.update(c, func(s *containerSnapshot) {
		s.Running, s.StartedAt, s.Waiting, s.Message = true, started, "", ""
		s.ProbeReady = c.spec.ReadinessProbe == nil
	})
	state := p.wait()
	code, sig := exitStatus(state)
	rec := exitRecord{ExitCode: code, Signal: sig, StartedAt: started, FinishedAt: time.Now()}
	rt.a.log.Info("container exited", "pod", rt.key, "container", c.spec.Name, "code", code)
	rt.mu.Lock()
	c.pid = 0
	rt.mu.Unlock()
	rt.update(c, func(s *containerSnapshot) { s.Running, s.ProbeReady, s.LastExit = false, false, &rec })
	return rec
}

// hostCommand is the command of a container that runs host binaries: command and args, or nothing without a command.
func hostCommand(c *corev1.Container) []string {
	if len(c.Command) == 0 {
		return nil
	}
	return append(append([]string{}, c.Command...), c.Args...)
}

func (rt *podRuntime) logPath(container string) string {
	return filepath.Join(rt.dir, container+".log")
}

// sandboxCommand prepares the helper that runs argv in the pod's sandbox with the container's env and mounts.
func (rt *podRuntime) sandboxCommand(c *containerRun, argv []string, workingDir string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	spec := sandboxSpec{
		Hostname:   hostnameFor(rt.pod),
		ScratchDir: filepath.Join(rt.dir, "scratch"),
		WorkingDir: workingDir,
		Mounts:     c.mounts,
		Root:       c.root,
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	args := append([]string{SandboxSubcommand, "--spec", string(data), "--"}, argv...)
	cmd := exec.Command(rt.a.selfExe, args...)
	cmd.Args[0] = "hcpsnap-sandbox"
	cmd.Env = environ(c.env)
	cmd.Dir = "/"
	return cmd, nil
}

// proc is a process group started by the agent.
type proc struct {
	pid  int
	done chan struct{}
	cmd  *exec.Cmd
}

// spawn starts cmd as the leader of a new process group (or session, for a terminal) in new mount and UTS
// namespaces, and registers the group with the pod so that stop can signal it. The process is forked and waited
// for on a locked OS thread, so that its parent-death signal fires when the agent dies and not when the Go runtime
// retires a thread.
func (rt *podRuntime) spawn(cmd *exec.Cmd, tty bool) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if tty {
		cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty = true, true
	} else {
		cmd.SysProcAttr.Setpgid = true
	}
	p := &proc{done: make(chan struct{}), cmd: cmd}
	started := make(chan error, 1)
	rt.mu.Lock()
	if rt.ctx.Err() != nil {
		rt.mu.Unlock()
		return nil, errors.New("pod is stopping")
	}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		rt.procs[p.pid] = struct{}{}
		started <- nil
		_ = cmd.Wait()
		// What the leader left running in its group (`cmd &` in an exec) lives on until the pod stops, as in a
		// container: the group stays registered until it is empty.
		rt.mu.Lock()
		if !groupAlive(p.pid) {
			delete(rt.procs, p.pid)
		}
		rt.mu.Unlock()
		close(p.done)
	}()
	err := <-started
	rt.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return p, nil
}

// wait waits for the process to exit and returns its state.
func (p *proc) wait() *os.ProcessState {
	<-p.done
	return p.cmd.ProcessState
}

// exitStatus returns the exit code of a process, 128+N when signal N killed it, as shells and runtimes report it.
func exitStatus(state *os.ProcessState) (code, signal int32) {
	if state == nil {
		return 128, 0
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal()), int32(ws.Signal())
	}
	return int32(state.ExitCode()), 0
}

// signalAll sends sig to every process group of the pod.
func (rt *podRuntime) signalAll(sig syscall.Signal) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for pid := range rt.procs {
		_ = syscall.Kill(-pid, sig)
	}
}

// stop ends the pod's processes as a kubelet does: no more (re)starts, SIGTERM to every process group, SIGKILL to
// those still there after grace, and waits for all of them.
func (rt *podRuntime) stop(grace time.Duration) {
	rt.cancel()
	rt.signalAll(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		rt.wg.Wait()
		for rt.procCount() > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	if n := rt.procCount(); n > 0 {
		rt.a.log.Warn("grace period over, killing", "pod", rt.key, "grace", grace, "processes", n)
	}
	for {
		rt.signalAll(syscall.SIGKILL)
		select {
		case <-done:
			return
		case <-time.After(time.Second):
		}
	}
}

// procCount returns how many process groups of the pod still have a process, forgetting the empty ones.
func (rt *podRuntime) procCount() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for pgid := range rt.procs {
		if !groupAlive(pgid) {
			delete(rt.procs, pgid)
		}
	}
	return len(rt.procs)
}

// groupAlive reports whether process group pgid still has a running member; a zombie that nobody has reaped yet
// does not count. The kernel does not reuse a number while it is the ID of a group with members, so the answer is
// about the group the agent started.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so read after the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}
