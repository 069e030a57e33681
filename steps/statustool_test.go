package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// TestBackupOnEtcdVersions runs the whole backup against a container of
// each etcd line: the status comes from etcdutl where the image has it, from
// etcdctl only when it is older than 3.6, and the choice made in preflight
// is recorded in the run. The manifest's revision is what the tool reported.
func TestBackupOnEtcdVersions(t *testing.T) {
	tests := []struct {
		name      string
		version   string
		noEtcdutl bool
		wantTool  string
		wantCmd   string
		wantKeys  int64
		wantStore string
	}{
		{name: "3.6 with etcdutl", version: "3.6.5", wantTool: StatusToolEtcdutl, wantCmd: DefaultEtcdutl, wantKeys: 321, wantStore: "3.6.0"},
		{name: "3.5 with etcdutl", version: "3.5.17", wantTool: StatusToolEtcdutl, wantCmd: DefaultEtcdutl, wantKeys: 789},
		{name: "3.5 without etcdutl", version: "3.5.17", noEtcdutl: true, wantTool: StatusToolEtcdctl, wantCmd: DefaultEtcdctl, wantKeys: 789},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			fx.exec.etcdVersion, fx.exec.noEtcdutl = tt.version, tt.noEtcdutl
			s := fx.state(defaultOptions())

			if err := fx.execute(s); err != nil {
				t.Fatal(err)
			}

			if s.Out.StatusTool != tt.wantTool {
				t.Errorf("status tool %q, want %q", s.Out.StatusTool, tt.wantTool)
			}
			c, ok := fx.exec.call("snapshot-status")
			want := []string{tt.wantCmd, "snapshot", "status", s.Out.Attempt.Path, "-w", "json"}
			if !ok || !slices.Equal(c.Cmd, want) {
				t.Errorf("status ran %q, want %q", c.Cmd, want)
			}
			// The choice is in the checkpoint, so that a resume uses it.
			run, out := fx.saver.last(t)
			if out.StatusTool != tt.wantTool || run.StatusOf(StepPreflight) != checkpoint.Done {
				t.Errorf("checkpoint records status tool %q", out.StatusTool)
			}
			m := readManifest(t, fx, "backups/example/"+s.Out.Timestamp+"/manifest.json")
			if m.Etcd.Revision != 456 || m.Etcd.TotalKeys != tt.wantKeys || m.Etcd.StorageVersion != tt.wantStore || m.Etcd.Hash != 2749163127 {
				t.Errorf("manifest etcd %+v", m.Etcd)
			}
		})
	}
}

// TestPreflightRefusesMissingTools: whatever the pod lacks is named on one
// line with exit 3, after one exec and before any change.
func TestPreflightRefusesMissingTools(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*fakeExec, *Options)
		wantErr string
	}{
		{"etcd 3.6 without etcdutl", func(f *fakeExec, _ *Options) { f.etcdVersion, f.noEtcdutl = "3.6.5", true },
			"has no etcdutl at /usr/bin/etcdutl, and etcdctl 3.6.5 has no `snapshot status`"},
		{"etcd 3.6, --etcdutl elsewhere", func(f *fakeExec, o *Options) { f.etcdVersion, o.Etcd.Etcdutl = "3.6.5", "/opt/etcdutl" },
			"has no etcdutl at /opt/etcdutl"},
		{"programs missing", func(f *fakeExec, _ *Options) { f.lacks = []string{"od", "tail"} },
			"container etcd of pod clusters-example/etcd-0 lacks od, tail, which hcpsnap runs there"},
		{"etcdctl missing", func(f *fakeExec, _ *Options) { f.lacks = []string{DefaultEtcdctl} },
			"lacks /usr/bin/etcdctl"},
		{"no sh", func(f *fakeExec, _ *Options) {
			f.fail["tools"] = errors.New(`exec: "sh": executable file not found in $PATH`)
		}, "cannot run sh in container etcd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			o := defaultOptions()
			tt.setup(fx.exec, &o)
			s := fx.state(o)

			err := fx.execute(s)

			if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("exit %d: %v; want exit 3 with %q", exitcode.Of(err), err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
			if ops := fx.exec.ops(); !slices.Equal(ops, []string{"tools"}) {
				t.Errorf("pod commands %v, want the one check", ops)
			}
			if p, a := fx.hs.writes(); len(p) != 0 || a != 0 || len(writeActions(fx.kube)) != 0 {
				t.Errorf("changed the cluster: %v %d %v", p, a, writeActions(fx.kube))
			}
		})
	}
}

// TestSnapshotStatusAnswers reads each tool's answer as the real ones give
// it: etcd 3.6's etcdctl prints its help and exits 0, which must not pass
// for a status; a run checkpointed before preflight chose a tool chooses one
// first; an unknown recorded tool is refused.
func TestSnapshotStatusAnswers(t *testing.T) {
	tests := []struct {
		name      string
		version   string
		noEtcdutl bool
		tool      string
		wantOps   []string
		wantErr   string
	}{
		{name: "3.6 etcdctl prints help", version: "3.6.5", tool: StatusToolEtcdctl, wantOps: []string{"snapshot-status"},
			wantErr: `etcdctl snapshot status /var/lib/data/snap.db: unexpected output "NAME:"`},
		{name: "etcdutl gone since preflight", version: "3.6.5", noEtcdutl: true, tool: StatusToolEtcdutl, wantOps: []string{"snapshot-status"},
			wantErr: "exited with status 127 (sh: /usr/bin/etcdutl: not found)"},
		{name: "unknown tool recorded", tool: "rm", wantErr: `unknown snapshot status tool "rm"`},
		{name: "no tool recorded: 3.6 chooses etcdutl", version: "3.6.5", wantOps: []string{"tools", "snapshot-status"}},
		{name: "no tool recorded: 3.5 without etcdutl chooses etcdctl", version: "3.5.17", noEtcdutl: true, wantOps: []string{"tools", "snapshot-status"}},
		{name: "no tool recorded: 3.6 without etcdutl is refused", version: "3.6.5", noEtcdutl: true, wantOps: []string{"tools"},
			wantErr: "has no etcdutl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			fx.exec.etcdVersion, fx.exec.noEtcdutl = tt.version, tt.noEtcdutl
			s := fx.state(defaultOptions())
			s.Out.HCPNamespace, s.Out.StatusTool = testHCPNS, tt.tool
			s.Out.Attempt = &Attempt{ID: "a1", Path: "/var/lib/data/snap.db"}
			fx.exec.putFile(s.Out.Attempt.Path, fx.snapshot)

			err := snapshotStatus(quietContext(), s)

			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
			if ops := fx.exec.ops(); !slices.Equal(ops, tt.wantOps) {
				t.Errorf("pod commands %v, want %v", ops, tt.wantOps)
			}
			if err == nil && (s.Out.Attempt.Status == nil || s.Out.Attempt.Status.Revision != 456 || s.Out.StatusTool == "") {
				t.Errorf("status %+v by %q", s.Out.Attempt.Status, s.Out.StatusTool)
			}
			if err != nil && s.Out.Attempt.Status != nil {
				t.Errorf("a failed status recorded %+v", s.Out.Attempt.Status)
			}
		})
	}
}

// TestPlanShowsStatusTool: the runbook's status command is the one the step
// runs, with the tool chosen; before a choice (a dry run cannot exec) it
// shows etcdutl and says when etcdctl is used instead.
func TestPlanShowsStatusTool(t *testing.T) {
	for _, noEtcdutl := range []bool{false, true} {
		fx := newFixture(t, nil)
		fx.exec.noEtcdutl = noEtcdutl
		s := fx.state(defaultOptions())
		if err := fx.execute(s); err != nil {
			t.Fatal(err)
		}
		c, ok := fx.exec.call("snapshot-status")
		if !ok {
			t.Fatal("no status ran")
		}
		p, err := planUpload(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if want := s.ocExec(c.Cmd...); !slices.Contains(p.Commands, want) {
			t.Errorf("etcdutl absent=%v: plan commands %q lack the command run, %q", noEtcdutl, p.Commands, want)
		}
	}
	fx := newFixture(t, nil)
	s := fx.state(defaultOptions())
	p, err := planUpload(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if last := p.Commands[len(p.Commands)-1]; !strings.HasSuffix(last, "-- /usr/bin/etcdutl snapshot status "+snapshotPath(s)+" -w json") {
		t.Errorf("dry-run status command %q", last)
	}
	if a := strings.Join(p.Actions, "\n"); !strings.Contains(a, "`etcdctl snapshot status` when the container has no etcdutl") {
		t.Errorf("actions %q do not say when etcdctl reads the status", a)
	}
}

func TestParsePodTools(t *testing.T) {
	tests := []struct {
		out      string
		want     podTools
		wantTool string
		wantErr  bool
	}{
		{out: "missing od /usr/bin/etcdctl\n", want: podTools{Missing: []string{"od", "/usr/bin/etcdctl"}}},
		{out: "etcdutl yes\netcdctl version: 3.6.5\n", want: podTools{Etcdutl: true, EtcdctlMajor: 3, EtcdctlMinor: 6, EtcdctlVersion: "3.6.5"}, wantTool: StatusToolEtcdutl},
		{out: "etcdutl no\netcdctl version: 3.6.5\n", want: podTools{EtcdctlMajor: 3, EtcdctlMinor: 6, EtcdctlVersion: "3.6.5"}},
		{out: "etcdutl no\netcdctl version: 3.5.17\n", want: podTools{EtcdctlMajor: 3, EtcdctlMinor: 5, EtcdctlVersion: "3.5.17"}, wantTool: StatusToolEtcdctl},
		{out: "etcdutl no\netcdctl version: 3.4.9\n", want: podTools{EtcdctlMajor: 3, EtcdctlMinor: 4, EtcdctlVersion: "3.4.9"}, wantTool: StatusToolEtcdctl},
		{out: "etcdutl no\nsegmentation fault\n", want: podTools{}},
		{out: "etcdutl no\n", want: podTools{}},
		{out: "", wantErr: true},
		{out: "hello\n", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parsePodTools(tt.out)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: error %v", tt.out, err)
			continue
		}
		if tt.wantErr {
			continue
		}
		if !slices.Equal(got.Missing, tt.want.Missing) || got.Etcdutl != tt.want.Etcdutl || got.EtcdctlMajor != tt.want.EtcdctlMajor ||
			got.EtcdctlMinor != tt.want.EtcdctlMinor || got.EtcdctlVersion != tt.want.EtcdctlVersion {
			t.Errorf("%q: got %+v, want %+v", tt.out, got, tt.want)
		}
		if tool, ok := got.statusTool(); tool != tt.wantTool || ok != (tt.wantTool != "") {
			t.Errorf("%q: status tool %q %v, want %q", tt.out, tool, ok, tt.wantTool)
		}
	}
}

// ---------------------------------------------------------------------------
// The scripts with the real sh, on a PATH that holds podPrograms only.

// onlyPodPrograms returns a folder holding links to podPrograms as this
// machine has them, and nothing else.
func onlyPodPrograms(t *testing.T, leave ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range podPrograms {
		if slices.Contains(leave, p) {
			continue
		}
		target, err := exec.LookPath(p)
		if err != nil {
			// kill is a builtin of sh; a machine may have no kill program.
			continue
		}
		if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// strictExec runs the scripts locally with PATH set to one folder and keeps
// everything they print on stderr, so that a program the scripts use but
// podPrograms omits shows as sh's "not found" even where a script goes on.
type strictExec struct {
	localExec
	dir    string // the only folder of the PATH
	mu     sync.Mutex
	stderr bytes.Buffer
}

func (e *strictExec) Exec(ctx context.Context, ns, pod, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if !strings.Contains(cmd[0], "/") {
		// The exec itself looks the program up on the container's PATH.
		p := filepath.Join(e.dir, cmd[0])
		if _, err := os.Stat(p); err != nil {
			e.mu.Lock()
			fmt.Fprintf(&e.stderr, "exec: %s: not found\n", cmd[0])
			e.mu.Unlock()
			return fmt.Errorf("exec: %q: executable file not found in $PATH", cmd[0])
		}
		cmd = append([]string{p}, cmd[1:]...)
	}
	var buf bytes.Buffer
	if stderr == nil {
		stderr = io.Discard
	}
	err := e.localExec.Exec(ctx, ns, pod, container, cmd, stdin, stdout, io.MultiWriter(stderr, &buf))
	e.mu.Lock()
	e.stderr.Write(buf.Bytes())
	e.mu.Unlock()
	return err
}

func (e *strictExec) notFound() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, line := range strings.Split(e.stderr.String(), "\n") {
		if strings.Contains(line, "not found") || strings.Contains(line, "No such file or directory") && strings.HasPrefix(line, "sh:") {
			return line
		}
	}
	return ""
}

// restrict makes s run its pod commands with only podPrograms on the PATH;
// the fake etcdctl keeps the machine's PATH for itself.
func restrict(t *testing.T, s *State, leave ...string) *strictExec {
	t.Helper()
	le := s.Clients.Exec.(localExec)
	dir := onlyPodPrograms(t, leave...)
	e := &strictExec{dir: dir, localExec: localExec{env: append(slices.Clone(le.env), "PATH="+dir, "HOSTPATH="+os.Getenv("PATH"))}}
	s.Clients.Exec = e
	return e
}

// TestPodScriptsNeedOnlyPodPrograms runs every pod script, on the paths
// that reach each of their commands, with nothing on the PATH but
// podPrograms: the list preflight checks is the list the scripts need.
func TestPodScriptsNeedOnlyPodPrograms(t *testing.T) {
	for _, mode := range []string{"", "fail-early", "fail-midway", "hang"} {
		t.Run("writer "+mode, func(t *testing.T) {
			ctx := quietContext()
			s, data := localState(t, mode, func(o *Options) {
				// Preflight checks that etcdutl exists; it is not run here.
				o.Etcd.Etcdutl = filepath.Join(filepath.Dir(o.Etcd.Etcdctl), "etcdutl")
			})
			if err := os.WriteFile(s.Opts.Etcd.Etcdutl, []byte("#!/bin/sh\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			e := restrict(t, s)
			if err := checkMemberTools(ctx, s); err != nil {
				t.Fatal(err)
			}
			err := snapshotSave(ctx, s)
			if mode == "fail-early" {
				if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") {
					t.Fatalf("snapshot-save error %v", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				got, _, err := readSnapshot(ctx, s)
				if mode == "" && (err != nil || !bytes.Equal(got, data)) {
					t.Fatalf("read %d bytes, %v", len(got), err)
				}
				if mode != "" && err == nil {
					t.Fatal("read a snapshot whose writer failed")
				}
			}
			pid, _ := os.ReadFile(s.Out.Attempt.Path + ".pid")
			if err := cleanupPodFile(ctx, s); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			if left := podFiles(t, s); len(left) != 0 {
				t.Errorf("files left in the pod: %v", left)
			}
			// The cleanup stopped a writer that still ran (stop_writer).
			if mode == "hang" {
				if _, err := os.Stat("/proc/" + strings.TrimSpace(string(pid))); err == nil {
					t.Errorf("etcdctl (pid %s) still runs after the cleanup", strings.TrimSpace(string(pid)))
				}
			}
			if line := e.notFound(); line != "" {
				t.Errorf("a script ran a program podPrograms lacks: %s", line)
			}
		})
	}
}

// checkMemberTools runs preflight's check and the df of checkMemberHealth,
// the two execs of preflight that need no etcd server.
func checkMemberTools(ctx context.Context, s *State) error {
	if err := checkPodTools(ctx, s); err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	if err := s.exec(ctx, []string{"df", "-Pk", s.Opts.Etcd.SnapshotDir}, &stdout, &stderr); err != nil {
		return err
	}
	_, err := parseDFAvailable(stdout.String())
	return err
}

// TestToolsScriptWithRealSh runs preflight's check with this machine's sh:
// it names what the PATH lacks and tells 3.5 from 3.6.
func TestToolsScriptWithRealSh(t *testing.T) {
	tests := []struct {
		name     string
		version  string
		etcdutl  bool
		leave    []string
		etcdctl  string // "" : the fake one
		wantTool string
		wantErr  string
	}{
		{name: "3.6 with etcdutl", version: "3.6.5", etcdutl: true, wantTool: StatusToolEtcdutl},
		{name: "3.5 with etcdutl", version: "3.5.17", etcdutl: true, wantTool: StatusToolEtcdutl},
		{name: "3.5 without etcdutl", version: "3.5.17", wantTool: StatusToolEtcdctl},
		{name: "3.6 without etcdutl", version: "3.6.5", wantErr: "has no etcdutl at"},
		{name: "od and tail missing", version: "3.6.5", etcdutl: true, leave: []string{"od", "tail"}, wantErr: "lacks od, tail, which"},
		{name: "etcdctl missing", version: "3.6.5", etcdutl: true, etcdctl: "/nonexistent/etcdctl", wantErr: "lacks /nonexistent/etcdctl, which"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ctl := filepath.Join(dir, "etcdctl")
			script := "#!/bin/sh\n[ \"$1\" = version ] && printf 'etcdctl version: " + tt.version + "\\nAPI version: 3.x\\n'\n"
			if err := os.WriteFile(ctl, []byte(script), 0o700); err != nil {
				t.Fatal(err)
			}
			utl := filepath.Join(dir, "etcdutl")
			if tt.etcdutl {
				if err := os.WriteFile(utl, []byte("#!/bin/sh\n"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			if tt.etcdctl != "" {
				ctl = tt.etcdctl
			}
			fx := newFixture(t, nil)
			o := defaultOptions()
			o.Etcd.Etcdctl, o.Etcd.Etcdutl = ctl, utl
			s := fx.state(o)
			s.Out.HCPNamespace = testHCPNS
			s.Clients.Exec = localExec{}
			e := restrict(t, s, tt.leave...)

			err := checkPodTools(quietContext(), s)

			if tt.wantErr != "" {
				if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("exit %d: %v; want exit 3 with %q", exitcode.Of(err), err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Out.StatusTool != tt.wantTool {
				t.Errorf("status tool %q, want %q", s.Out.StatusTool, tt.wantTool)
			}
			if line := e.notFound(); line != "" {
				t.Errorf("the check ran a program podPrograms lacks: %s", line)
			}
		})
	}
}

// etcdStatusJSON checks that SnapshotStatus reads both lines' JSON as the
// real tools print it (recorded from etcdutl 3.6.5 and etcdctl/etcdutl
// 3.5.17 on one snapshot of a 3.6.5 server).
func TestSnapshotStatusJSONOfBothLines(t *testing.T) {
	for _, tt := range []struct{ out, version string }{
		{`{"hash":837592109,"revision":52,"totalKey":49,"totalSize":24576,"version":"3.6.0"}`, "3.6.0"},
		{`{"hash":837592109,"revision":52,"totalKey":58,"totalSize":24576}`, ""},
	} {
		var st SnapshotStatus
		if err := json.Unmarshal([]byte(tt.out), &st); err != nil {
			t.Fatal(err)
		}
		if st.Revision != 52 || st.Hash != 837592109 || st.TotalSize != 24576 || st.Version != tt.version {
			t.Errorf("%s read as %+v", tt.out, st)
		}
	}
}

// TestSnapshotStatusWithRealEtcd runs preflight's check and snapshotStatus
// with real etcd binaries, on a snapshot of a real server of the same
// version: HCPSNAP_ETCD_BIN_DIRS lists folders (colon-separated) that hold
// etcd, etcdctl and etcdutl, e.g. .cache/bin (3.5) and a 3.6 build. For each
// folder it also runs the status with etcdctl alone, as an image without
// etcdutl would: that works before 3.6 and is refused by preflight from 3.6
// on. The revision recorded must be the server's at the snapshot.
func TestSnapshotStatusWithRealEtcd(t *testing.T) {
	dirs := os.Getenv("HCPSNAP_ETCD_BIN_DIRS")
	if dirs == "" {
		t.Skip("set HCPSNAP_ETCD_BIN_DIRS to folders holding etcd, etcdctl and etcdutl")
	}
	for i, dir := range filepath.SplitList(dirs) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			data := t.TempDir()
			client := fmt.Sprintf("http://127.0.0.1:%d", 43379+2*i)
			peer := fmt.Sprintf("http://127.0.0.1:%d", 43380+2*i)
			server := exec.Command(filepath.Join(dir, "etcd"), "--data-dir", filepath.Join(data, "etcd"),
				"--listen-client-urls", client, "--advertise-client-urls", client,
				"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer)
			if err := server.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = server.Process.Kill(); _ = server.Wait() }()
			ctl := func(args ...string) string {
				t.Helper()
				var out []byte
				var err error
				for range 50 {
					out, err = exec.Command(filepath.Join(dir, "etcdctl"), append([]string{"--endpoints", client}, args...)...).CombinedOutput()
					if err == nil {
						return string(out)
					}
					time.Sleep(100 * time.Millisecond)
				}
				t.Fatalf("etcdctl %v: %v: %s", args, err, out)
				return ""
			}
			for k := range 40 {
				ctl("put", fmt.Sprintf("key-%d", k), "value")
			}
			ctl("del", "key-3")
			var status []struct {
				Status struct {
					Header struct {
						Revision int64 `json:"revision"`
					} `json:"header"`
				} `json:"Status"`
			}
			if err := json.Unmarshal([]byte(ctl("endpoint", "status", "-w", "json")), &status); err != nil || len(status) != 1 {
				t.Fatalf("endpoint status: %v", err)
			}
			snap := filepath.Join(data, "snap.db")
			ctl("snapshot", "save", snap)

			for _, withEtcdutl := range []bool{true, false} {
				fx := newFixture(t, nil)
				o := defaultOptions()
				o.Etcd.Etcdctl, o.Etcd.Etcdutl = filepath.Join(dir, "etcdctl"), filepath.Join(dir, "etcdutl")
				if !withEtcdutl {
					o.Etcd.Etcdutl = filepath.Join(data, "no-etcdutl")
				}
				s := fx.state(o)
				s.Out.HCPNamespace = testHCPNS
				s.Out.Attempt = &Attempt{ID: "a1", Path: snap}
				s.Clients.Exec = localExec{}
				ctx := quietContext()
				err := checkPodTools(ctx, s)
				version := strings.TrimSpace(strings.SplitN(ctl("version"), "\n", 2)[0])
				newer := !strings.Contains(version, " 3.5.") && !strings.Contains(version, " 3.4.")
				if !withEtcdutl && newer {
					if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), "has no `snapshot status`") {
						t.Errorf("%s without etcdutl: %v, want a refusal", version, err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := snapshotStatus(ctx, s); err != nil {
					t.Fatalf("%s, etcdutl %v: %v", version, withEtcdutl, err)
				}
				st := s.Out.Attempt.Status
				t.Logf("%s by %s: %+v", version, s.Out.StatusTool, *st)
				if st.Revision != status[0].Status.Header.Revision || st.TotalSize <= 0 || st.Hash == 0 {
					t.Errorf("%s by %s: %+v, want revision %d", version, s.Out.StatusTool, *st, status[0].Status.Header.Revision)
				}
			}
		})
	}
}
