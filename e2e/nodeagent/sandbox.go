package nodeagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hcpsnap/hcpsnap/e2e/mountinfo"
)

// SandboxSubcommand is the name of the hidden subcommand under which the node agent re-executes its own binary to
// start a pod process. The binary must hand the arguments that follow it to SandboxMain, before any other
// initialisation that could start threads doing mounts or change the working directory.
const SandboxSubcommand = "sandbox-exec"

// sandboxSpec describes the mount namespace a pod process runs in. The agent serialises it to JSON and passes it
// to the helper with --spec; the environment of the helper is the environment of the command.
type sandboxSpec struct {
	// Hostname is set in the new UTS namespace, so that `hostname` prints the pod name as in a real pod.
	Hostname string `json:"hostname,omitempty"`
	// ScratchDir is an existing, empty folder of the pod, owned by the agent. The helper mounts a tmpfs on it, in
	// its namespace only, to hold the upper and work folders of its overlays.
	ScratchDir string `json:"scratchDir"`
	// WorkingDir is the folder the command starts in; "/" when empty.
	WorkingDir string `json:"workingDir,omitempty"`
	// Mounts are bind-mounted in order of depth of their target, so that a mount inside another mount works.
	Mounts []sandboxMount `json:"mounts"`
	// Root, when set, runs the command in an image's root file system, as a container runtime does, instead of in
	// the host's.
	Root *sandboxRoot `json:"root,omitempty"`
}

// sandboxRoot is the root file system and user of a container that runs from an image. The helper lays an overlay
// over RootFS whose upper layer lives on the scratch tmpfs (so the unpacked image never changes), creates the mount
// points there, mounts /proc, a minimal /dev and the volumes, makes the overlay read-only when asked, makes it the
// root with pivot_root, and executes the command as User.
type sandboxRoot struct {
	RootFS   string      `json:"rootfs"`
	ReadOnly bool        `json:"readOnly,omitempty"`
	User     credentials `json:"user"`
}

// sandboxMount is one bind mount of the sandbox.
type sandboxMount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// SandboxError is returned by SandboxMain. Its ExitCode follows the conventions of container runtimes and shells:
// 127 when the command is not found, 126 when it cannot be executed, 125 when the sandbox cannot be set up.
type SandboxError struct {
	Code int
	Err  error
}

// Error implements error.
func (e *SandboxError) Error() string { return "sandbox: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *SandboxError) Unwrap() error { return e.Err }

// ExitCode is the status the sandbox helper should exit with.
func (e *SandboxError) ExitCode() int { return e.Code }

// SandboxMain runs in the sandbox helper, the current binary re-executed by the agent as
// `<binary> sandbox-exec --spec <json or file> -- command args...` in a new mount namespace. args are the
// arguments after the subcommand (a leading "sandbox-exec" is tolerated). It sets up the mounts of the spec and
// replaces itself with the command, so it never returns on success; the caller prints the returned error to stderr
// and exits with its ExitCode.
func SandboxMain(args []string) error {
	if len(args) > 0 && args[0] == SandboxSubcommand {
		args = args[1:]
	}
	ppid := os.Getppid()
	spec, argv, err := parseSandboxArgs(args)
	if err != nil {
		return &SandboxError{Code: 125, Err: err}
	}
	if spec.Root != nil {
		// The parent-death signal set below and the exec must happen on the same thread.
		runtime.LockOSThread()
	}
	if err := setupSandbox(spec); err != nil {
		return &SandboxError{Code: 125, Err: err}
	}
	path, err := lookPath(argv[0])
	if err != nil {
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = 127
		}
		return &SandboxError{Code: code, Err: err}
	}
	if spec.Root != nil {
		if err := becomeUser(spec.Root.User, ppid); err != nil {
			return &SandboxError{Code: 125, Err: err}
		}
	}
	err = syscall.Exec(path, argv, os.Environ())
	code := 126
	if errors.Is(err, syscall.ENOENT) {
		code = 127
	}
	return &SandboxError{Code: code, Err: fmt.Errorf("exec %s: %w", path, err)}
}

// parseSandboxArgs splits `--spec X -- argv...`. X is inline JSON when it starts with "{", else a file name.
func parseSandboxArgs(args []string) (*sandboxSpec, []string, error) {
	var raw string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--spec" && i+1 < len(args):
			raw = args[i+1]
			i++
		case strings.HasPrefix(args[i], "--spec="):
			raw = strings.TrimPrefix(args[i], "--spec=")
		case args[i] == "--":
			argv := args[i+1:]
			if len(argv) == 0 {
				return nil, nil, errors.New("no command after --")
			}
			if raw == "" {
				return nil, nil, errors.New("missing --spec")
			}
			data := []byte(raw)
			if !strings.HasPrefix(strings.TrimSpace(raw), "{") {
				var err error
				if data, err = os.ReadFile(raw); err != nil {
					return nil, nil, err
				}
			}
			spec := &sandboxSpec{}
			if err := json.Unmarshal(data, spec); err != nil {
				return nil, nil, fmt.Errorf("parse spec: %w", err)
			}
			return spec, argv, nil
		default:
			return nil, nil, fmt.Errorf("unexpected argument %q", args[i])
		}
	}
	return nil, nil, errors.New("usage: sandbox-exec --spec <json|file> -- command [args...]")
}

// lookPath resolves the command inside the namespace, with the PATH of the command's environment, so that a binary
// bind-mounted from a hostPath volume (say /usr/bin/etcdctl) is found.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	return exec.LookPath(name)
}

// setupSandbox runs in the fresh mount namespace of the helper.
func setupSandbox(spec *sandboxSpec) error {
	// First of all: stop propagation, so that nothing mounted below reaches the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / rprivate: %w", err)
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	if spec.ScratchDir == "" {
		return errors.New("spec has no scratchDir")
	}
	if err := unix.Mount("tmpfs", spec.ScratchDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("mount scratch tmpfs on %s: %w", spec.ScratchDir, err)
	}
	if spec.Root != nil {
		return setupImageRoot(spec)
	}
	mounts := sortMounts(spec.Mounts)
	st := &mountState{}
	hostFS := realFS{}
	for _, m := range mounts {
		steps, err := planMount(m, hostFS, st)
		if err != nil {
			return err
		}
		for _, s := range steps {
			if err := applyStep(s, spec.ScratchDir, st); err != nil {
				return fmt.Errorf("mount %s at %s: %s %s: %w", m.Source, m.Target, s.Op, s.Path, err)
			}
		}
	}
	// Detach the scratch tmpfs and the copies of overlaid folders below it: the overlays keep what they use alive,
	// and the command sees a clean mount table.
	if err := unix.Unmount(spec.ScratchDir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach scratch: %w", err)
	}
	dir := spec.WorkingDir
	if dir == "" {
		dir = "/"
	}
	if err := os.Chdir(dir); err != nil {
		return fmt.Errorf("working dir: %w", err)
	}
	return nil
}

// sortMounts orders mounts by the depth of their target, keeping the given order among equals, so that a parent
// mount point is mounted before a mount point inside it.
func sortMounts(in []sandboxMount) []sandboxMount {
	out := make([]sandboxMount, len(in))
	for i, m := range in {
		m.Target = filepath.Clean("/" + m.Target)
		out[i] = m
	}
	sort.SliceStable(out, func(i, j int) bool { return depth(out[i].Target) < depth(out[j].Target) })
	return out
}

func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// stepOp is one kind of action of the mount plan.
type stepOp string

const (
	// opOverlay mounts a writable overlay on an existing folder whose content stays visible.
	opOverlay stepOp = "overlay"
	// opMkdir creates a folder (and its parents) inside an overlay.
	opMkdir stepOp = "mkdir"
	// opTouch creates an empty file (and its parent folders) inside an overlay, as a mount point for a file.
	opTouch stepOp = "touch"
	// opBind bind-mounts Source at Path.
	opBind stepOp = "bind"
)

// mountStep is one action of the mount plan of a target.
type mountStep struct {
	Op       stepOp
	Path     string
	Source   string
	ReadOnly bool
}

// fsView is what the planner needs to know of the file system as the namespace sees it.
type fsView interface {
	// stat reports whether the path exists and is a folder, following symbolic links.
	stat(path string) (exists, isDir bool)
	// resolve returns the path with symbolic links resolved; the path exists.
	resolve(path string) string
}

// mountState records what the helper has mounted so far, to tell whether a folder is writable without touching the
// host: it is when the deepest mount containing it is one of our overlays.
type mountState struct {
	overlays []string
	binds    []string
}

// writable reports whether creating something in dir writes to one of our overlays (and so never to the host or to
// a volume).
func (s *mountState) writable(dir string) bool {
	best, isOverlay := -1, false
	for _, o := range s.overlays {
		if within(dir, o) && len(o) > best {
			best, isOverlay = len(o), true
		}
	}
	for _, b := range s.binds {
		if within(dir, b) && len(b) > best {
			best, isOverlay = len(b), false
		}
	}
	return isOverlay
}

// within reports whether p is root or below it.
func within(p, root string) bool {
	if root == "/" {
		return true
	}
	return p == root || strings.HasPrefix(p, root+"/")
}

// planMount returns the steps that mount m, given the file system as the namespace sees it now: when the target is
// missing, its nearest existing ancestor is made writable with an overlay (unless it already is one of ours) and
// the missing path is created as a folder or file, like the source; then the source is bind-mounted.
func planMount(m sandboxMount, view fsView, st *mountState) ([]mountStep, error) {
	target := filepath.Clean("/" + m.Target)
	srcExists, srcIsDir := view.stat(m.Source)
	if !srcExists {
		return nil, fmt.Errorf("mount source %s does not exist", m.Source)
	}
	bind := mountStep{Op: opBind, Path: target, Source: m.Source, ReadOnly: m.ReadOnly}
	if exists, isDir := view.stat(target); exists {
		if isDir != srcIsDir {
			return nil, fmt.Errorf("cannot mount %s on %s: one is a folder, the other is not", m.Source, target)
		}
		return []mountStep{bind}, nil
	}
	ancestor := filepath.Dir(target)
	for {
		exists, isDir := view.stat(ancestor)
		if exists {
			if !isDir {
				return nil, fmt.Errorf("cannot create %s: %s is not a folder", target, ancestor)
			}
			break
		}
		ancestor = filepath.Dir(ancestor)
	}
	ancestor = view.resolve(ancestor)
	if ancestor == "/" {
		return nil, fmt.Errorf("cannot create %s: its top-level folder does not exist and / cannot be overlaid", target)
	}
	var steps []mountStep
	if !st.writable(ancestor) {
		steps = append(steps, mountStep{Op: opOverlay, Path: ancestor})
	}
	create := mountStep{Op: opMkdir, Path: target}
	if !srcIsDir {
		create.Op = opTouch
	}
	return append(steps, create, bind), nil
}

// realFS is fsView on the live file system.
type realFS struct{}

func (realFS) stat(path string) (bool, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, false
	}
	return true, fi.IsDir()
}

func (realFS) resolve(path string) string {
	r, err := filepath.EvalSymlinks(path)
	if err != nil {
		return path
	}
	return r
}

// applyStep performs one step in the helper's namespace and records it in st.
func applyStep(s mountStep, scratch string, st *mountState) error {
	switch s.Op {
	case opOverlay:
		if err := mountOverlay(s.Path, scratch, len(st.overlays)); err != nil {
			return err
		}
		st.overlays = append(st.overlays, s.Path)
	case opMkdir:
		return os.MkdirAll(s.Path, 0o755)
	case opTouch:
		if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(s.Path, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	case opBind:
		if err := unix.Mount(s.Source, s.Path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		if s.ReadOnly {
			flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
			if err := unix.Mount("", s.Path, "", flags, ""); err != nil {
				return fmt.Errorf("remount read-only: %w", err)
			}
		}
		st.binds = append(st.binds, s.Path)
	default:
		return fmt.Errorf("unknown step %q", s.Op)
	}
	return nil
}

// mountOverlay makes dir writable in the namespace: an overlay whose lower layer is dir itself and whose upper and
// work folders live on the scratch tmpfs. An overlay does not show the mounts below its lower folder, so those are
// bind-mounted again from a recursive copy of dir taken first.
func mountOverlay(dir, scratch string, n int) error {
	subs, err := submountsOf(dir)
	if err != nil {
		return err
	}
	base := filepath.Join(scratch, strconv.Itoa(n))
	upper, work, old := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "old")
	for _, d := range []string{upper, work, old} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if len(subs) > 0 {
		if err := unix.Mount(dir, old, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("copy %s: %w", dir, err)
		}
	}
	opts := "lowerdir=" + escapeOverlayPath(dir) + ",upperdir=" + escapeOverlayPath(upper) +
		",workdir=" + escapeOverlayPath(work)
	if err := unix.Mount("overlay", dir, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	for _, sub := range subs {
		rel := strings.TrimPrefix(sub, dir)
		if dir == "/" {
			rel = sub
		}
		if err := unix.Mount(filepath.Join(old, rel), sub, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("restore mount %s: %w", sub, err)
		}
	}
	return nil
}

// escapeOverlayPath escapes the separators of overlay's mount options.
func escapeOverlayPath(p string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`).Replace(p)
}

// submountsOf lists the outermost mount points strictly below dir, from /proc/self/mountinfo.
func submountsOf(dir string) ([]string, error) {
	points, err := mountinfo.Points()
	if err != nil {
		return nil, err
	}
	return outermostBelow(dir, points), nil
}

// outermostBelow keeps the mount points strictly below dir that are not below another such mount point.
func outermostBelow(dir string, points []string) []string {
	var below []string
	for _, p := range points {
		if p != dir && within(p, dir) {
			below = append(below, p)
		}
	}
	sort.Strings(below)
	var out []string
next:
	for _, p := range below {
		for _, o := range out {
			if within(p, o) {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}
