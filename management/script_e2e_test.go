//go:build e2e

package management

// These tests run the snapshot script as it runs on a master: as root, from
// its file of mode 0755, with its settings in the environment, under the
// node name the test gives it. Each run has a mount and UTS namespace of its
// own (unshare --mount --uts, private propagation): temporary folders are
// bound over /mnt, /home, /var/lib and /usr/local/bin there, so the script
// writes to /mnt/... and /home/core/... without touching the machine's own
// folders. cluster-backup.sh is the stand-in in testdata/, which takes real
// snapshots with etcdctl of a throwaway etcd server started by the test from
// the binaries that `make deps` builds (.cache/bin/etcd-<version>/; a missing
// binary fails the test). Without root the tests skip: unshare and mount
// need it.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/internal/shell"
)

// nodeName is the node name every run has, unless told.
const nodeName = "master-0.test.example"

// etcdVersions reads the pinned etcd lines from deps/versions.mk, the 3.6
// line first.
func etcdVersions(t *testing.T) []string {
	t.Helper()
	mk, err := os.ReadFile("../deps/versions.mk")
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, name := range []string{"ETCD_36_VERSION", "ETCD_35_VERSION"} {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(\S+)`).FindSubmatch(mk)
		if m == nil {
			t.Fatalf("deps/versions.mk sets no %s", name)
		}
		versions = append(versions, string(m[1]))
	}
	return versions
}

// etcdBinDir is LOCALENV_BIN_DIR (or the repository's .cache/bin)
// /etcd-<version>, with etcd, etcdctl and etcdutl in it.
func etcdBinDir(t *testing.T, version string) string {
	t.Helper()
	dir := os.Getenv("LOCALENV_BIN_DIR")
	if dir == "" {
		dir = "../.cache/bin"
	}
	dir, err := filepath.Abs(filepath.Join(dir, "etcd-"+version))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"etcd", "etcdctl", "etcdutl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("no %s in %s: run `make deps`", b, dir)
		}
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// master is what a run of the script sees on the node: a running etcd (its
// data folder is the node's /var/lib/etcd) and the stand-in cluster-backup.sh.
type master struct {
	bin       string // etcd, etcdctl and etcdutl
	endpoint  string // the etcd's client URL
	varLib    string // bound over /var/lib: holds etcd -> the etcd's data folder
	script    string // the script, mode 0755
	standin   string // testdata/cluster-backup.sh
	resources string // what the stand-in puts in static_kuberesources_*.tar.gz
	keys      int    // keys written into etcd
}

// newMaster starts a single-member etcd of version on loopback, writes keys
// into it and lays out the rest.
func newMaster(t *testing.T, version string) *master {
	t.Helper()
	m := &master{bin: etcdBinDir(t, version), keys: 20}
	tmp := t.TempDir()
	data := filepath.Join(tmp, "etcd")
	m.endpoint = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(filepath.Join(m.bin, "etcd"), "--name", "m0", "--data-dir", data,
		"--listen-client-urls", m.endpoint, "--advertise-client-urls", m.endpoint,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "m0="+peer,
		"--log-level", "error")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("etcd %s output:\n%s", version, logs.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if out, err := m.etcdctl("endpoint", "health"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("etcd %s at %s is not healthy after 30s: %v\n%s", version, m.endpoint, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := range m.keys {
		if out, err := m.etcdctl("put", fmt.Sprintf("/kubernetes.io/secrets/ns/s%02d", i), strings.Repeat("v", 1000)); err != nil {
			t.Fatalf("etcdctl put: %v\n%s", err, out)
		}
	}

	m.varLib = filepath.Join(tmp, "var-lib")
	must(t, os.Mkdir(m.varLib, 0o755))
	must(t, os.Symlink(data, filepath.Join(m.varLib, "etcd")))
	m.resources = filepath.Join(tmp, "static-pod-resources")
	for _, f := range []string{"kube-apiserver-pod-7/kube-apiserver-pod.yaml", "etcd-pod-3/etcd-pod.yaml", "kube-scheduler-pod-5/kube-scheduler-pod.yaml"} {
		must(t, os.MkdirAll(filepath.Join(m.resources, filepath.Dir(f)), 0o755))
		must(t, os.WriteFile(filepath.Join(m.resources, f), []byte("kind: Pod\n"), 0o644))
	}
	m.script = filepath.Join(tmp, "hcpsnap-etcd-snapshot.sh")
	must(t, os.WriteFile(m.script, Script(), 0o755))
	standin, err := filepath.Abs("testdata/cluster-backup.sh")
	must(t, err)
	m.standin = standin
	return m
}

func (m *master) etcdctl(args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(m.bin, "etcdctl"), append([]string{"--endpoints", m.endpoint, "--command-timeout", "5s"}, args...)...)
	return cmd.CombinedOutput()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// run is one run of the script.
type run struct {
	node     string            // the node name; nodeName when empty
	settings map[string]string // HOST, TGT_DIR, ... (HOST: the node name unless given)
	binds    map[string]string // folder in the namespace -> folder bound over it (/var/lib: m.varLib unless given)
	tmpfs    map[string]string // folder in the namespace -> size of a tmpfs mounted over it
	standin  map[string]string // STANDIN_FAIL, STANDIN_SLEEP
	calls    string            // STANDIN_CALLS
	started  func(*exec.Cmd)   // called once the run started, for signals
}

// result is what the journal would show of a run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%sstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs the script in namespaces of its own, in its own process group (as
// systemd runs a service in a control group of its own).
func (m *master) run(t *testing.T, r run) result {
	t.Helper()
	node := r.node
	if node == "" {
		node = nodeName
	}
	binds := map[string]string{"/var/lib": m.varLib}
	for k, v := range r.binds {
		binds[k] = v
	}
	setup := []string{"set -e", shell.Join("hostname", node)}
	for _, target := range sortedKeys(binds) {
		if _, err := os.Stat(target); err != nil {
			t.Fatalf("%s is missing on this machine: the test binds a folder over it in a namespace of its own", target)
		}
		setup = append(setup, shell.Join("mount", "--bind", binds[target], target))
	}
	for _, target := range sortedKeys(r.tmpfs) {
		setup = append(setup, shell.Join("mount", "-t", "tmpfs", "-o", "size="+r.tmpfs[target]+",mode=0755", "tmpfs", target))
	}
	setup = append(setup, "exec "+shell.Quote(m.script))
	cmd := exec.Command("unshare", "--mount", "--uts", "--propagation", "private", "--", "bash", "-c", strings.Join(setup, "\n"))
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"STANDIN_ETCDCTL=" + filepath.Join(m.bin, "etcdctl"), "STANDIN_ENDPOINTS=" + m.endpoint, "STANDIN_RESOURCES=" + m.resources}
	settings := map[string]string{EnvHost: node, EnvClusterBackup: m.standin}
	for k, v := range r.settings {
		settings[k] = v
	}
	for _, k := range sortedKeys(settings) {
		if settings[k] != "-" { // "-": unset
			cmd.Env = append(cmd.Env, k+"="+settings[k])
		}
	}
	for k, v := range r.standin {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if r.calls != "" {
		cmd.Env = append(cmd.Env, "STANDIN_CALLS="+r.calls)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if r.started != nil {
		r.started(cmd)
	}
	err := cmd.Wait()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		res.code = exit.ExitCode()
	default:
		t.Fatalf("script: %v\n%s", err, res)
	}
	t.Logf("run on %s with %v %v:\n%s", node, r.settings, r.standin, res)
	return res
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// entries lists dir's names, sorted; nil when dir does not exist.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	list, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	must(t, err)
	var names []string
	for _, e := range list {
		names = append(names, e.Name())
	}
	return names
}

// completeIn lists the complete folders in dir, oldest first.
func completeIn(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	for _, n := range entries(t, dir) {
		if fi, err := os.Lstat(filepath.Join(dir, n)); err == nil && fi.IsDir() && IsCompleteFolder(n) {
			names = append(names, n)
		}
	}
	return names
}

// backup is a complete folder's snapshot and its SHA-256.
type backup struct {
	name, snapshot, sha string
}

// checkComplete checks a complete folder as pull-node will read it: mode
// 0700, exactly a non-empty snapshot_<time>.db of mode 0600 that etcdutl
// reads, with the keys m wrote, and static_kuberesources_<same time>.tar.gz
// of mode 0600 holding the static pod resources.
func (m *master) checkComplete(t *testing.T, dir, name string) backup {
	t.Helper()
	folder := filepath.Join(dir, name)
	fi, err := os.Lstat(folder)
	must(t, err)
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: mode %v, want a folder of mode 0700", folder, fi.Mode())
	}
	names := entries(t, folder)
	if len(names) != 2 || !regexp.MustCompile(`^snapshot_\d{4}-\d\d-\d\d_\d{6}\.db$`).MatchString(names[0]) ||
		names[1] != "static_kuberesources_"+strings.TrimSuffix(strings.TrimPrefix(names[0], "snapshot_"), ".db")+".tar.gz" {
		t.Fatalf("%s holds %q, want snapshot_<time>.db and static_kuberesources_<time>.tar.gz", folder, names)
	}
	for _, n := range names {
		fi, err := os.Lstat(filepath.Join(folder, n))
		must(t, err)
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
			t.Errorf("%s/%s: mode %v, %d bytes; want a non-empty file of mode 0600", folder, n, fi.Mode(), fi.Size())
		}
	}
	snapshot := filepath.Join(folder, names[0])
	out, err := exec.Command(filepath.Join(m.bin, "etcdutl"), "snapshot", "status", snapshot, "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status %s: %v\n%s", snapshot, err, out)
	}
	var status struct {
		Revision int64 `json:"revision"`
		TotalKey int   `json:"totalKey"`
	}
	if err := json.Unmarshal(out, &status); err != nil {
		t.Fatalf("etcdutl snapshot status %s: %v\n%s", snapshot, err, out)
	}
	if status.TotalKey < m.keys || status.Revision < int64(m.keys)+1 {
		t.Errorf("%s: etcdutl snapshot status %s, want at least %d keys and revision %d", snapshot, out, m.keys, m.keys+1)
	}
	tarList, err := exec.Command("tar", "-tzf", filepath.Join(folder, names[1])).Output()
	must(t, err)
	if !strings.Contains(string(tarList), "kube-apiserver-pod-7/kube-apiserver-pod.yaml") {
		t.Errorf("%s/%s lists %q, want the static pod resources", folder, names[1], tarList)
	}
	b, err := os.ReadFile(snapshot)
	must(t, err)
	sum := sha256.Sum256(b)
	return backup{name: name, snapshot: names[0], sha: hex.EncodeToString(sum[:])}
}

// unchanged fails unless each backup is still there with the same snapshot.
func unchanged(t *testing.T, dir string, backups ...backup) {
	t.Helper()
	for _, b := range backups {
		got, err := os.ReadFile(filepath.Join(dir, b.name, b.snapshot))
		if err != nil {
			t.Errorf("backup %s: %v", b.name, err)
			continue
		}
		if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != b.sha {
			t.Errorf("backup %s: its snapshot changed", b.name)
		}
	}
}

// wantLines fails unless each pattern matches a line of out, in this order.
func wantLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	i := 0
	for _, p := range patterns {
		re := regexp.MustCompile(p)
		for i < len(lines) && !re.MatchString(lines[i]) {
			i++
		}
		if i == len(lines) {
			t.Errorf("no line matching %q (after the earlier ones) in:\n%s", p, out)
			return
		}
		i++
	}
}

const tag = `^hcpsnap-etcd-snapshot: `

// newest is the name of the one complete folder in after that is not in
// before.
func newest(t *testing.T, before, after []string) string {
	t.Helper()
	var added []string
	for _, n := range after {
		if !slices.Contains(before, n) {
			added = append(added, n)
		}
	}
	if len(added) != 1 {
		t.Fatalf("complete folders went from %q to %q: want one more", before, after)
	}
	return added[0]
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the script runs as root on a master; these tests need root for unshare --mount and mount --bind")
	}
	for _, c := range []string{"unshare", "hostname", "flock", "tar"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is missing: %v", c, err)
		}
	}
}

func TestScriptOnMaster(t *testing.T) {
	requireRoot(t)
	versions := etcdVersions(t)
	m := newMaster(t, versions[0])

	t.Run("host", func(t *testing.T) {
		mnt := t.TempDir()
		calls := filepath.Join(t.TempDir(), "calls")
		binds := map[string]string{"/mnt": mnt}
		for _, tc := range []struct {
			node, host string
			match      bool
		}{
			{node: nodeName, host: "master-1"},
			{node: nodeName, host: "master"},
			{node: nodeName, host: "master-0.other.example"},
			{node: nodeName, host: "master-0.test"},
			{node: "master-0", host: "master-1.test.example"},
			{node: nodeName, host: "master-0", match: true},
			{node: nodeName, host: "MASTER-0.Test.Example", match: true},
			{node: "master-0", host: nodeName, match: true},
		} {
			// A mismatch exits before any other setting is read: TGT_DIR is
			// forbidden here, KEEP invalid.
			settings := map[string]string{EnvHost: tc.host, EnvTargetDir: "/var/lib/etcd/x", EnvKeep: "0"}
			if tc.match {
				settings = map[string]string{EnvHost: tc.host, EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "1"}
			}
			res := m.run(t, run{node: tc.node, settings: settings, binds: binds, calls: calls})
			name := fmt.Sprintf("node %s, HOST=%s", tc.node, tc.host)
			if !tc.match {
				if res.code != 0 || res.stderr != "" || res.stdout != fmt.Sprintf("hcpsnap-etcd-snapshot: this node is %s, not HOST=%s: nothing to do\n", tc.node, tc.host) {
					t.Errorf("%s: want exit 0 and one line:\n%s", name, res)
				}
				continue
			}
			if res.code != 0 {
				t.Errorf("%s: want a run:\n%s", name, res)
			}
		}
		if got := completeIn(t, filepath.Join(mnt, "etcd-snapshots")); len(got) != 1 {
			t.Errorf("after three matching runs with KEEP=1: complete folders %q, want one", got)
		}
		b, _ := os.ReadFile(calls)
		if n := strings.Count(string(b), "\n"); n != 3 {
			t.Errorf("cluster-backup.sh ran %d times, want 3 (the matching runs):\n%s", n, b)
		}
	})

	t.Run("forbidden target", func(t *testing.T) {
		// /var/lib as on a master: etcd's data is a real folder there.
		varLib, mnt, outside := t.TempDir(), t.TempDir(), t.TempDir()
		must(t, os.MkdirAll(filepath.Join(varLib, "etcd", "member"), 0o700))
		must(t, os.Symlink("/var/lib/etcd/snapshots", filepath.Join(mnt, "into-etcd")))
		must(t, os.Symlink("/etc", filepath.Join(mnt, "into-etc")))
		calls := filepath.Join(t.TempDir(), "calls")
		for _, tc := range []struct{ dir, why string }{
			{"/etc/hcpsnap", "is outside the allowed places: pick a folder under /home/core, /mnt, /var (or /tmp with ALLOW_TMPFS=true)"},
			{"/var/lib/etcd/x", "is or holds /var/lib/etcd, which the node itself uses"},
			{"/var/lib/etcd", "is or holds /var/lib/etcd"},
			{"/var/lib", "is or holds /var/lib/etcd"},
			{"/var/lib/kubelet/x", "is or holds /var/lib/kubelet"},
			{"/mnt", "is outside the allowed places"},
			{"/mnt/../etc/x", "is not a clean path"},
			{"/mnt/into-etcd", "leads to /var/lib/etcd/snapshots, which is or holds /var/lib/etcd"},
			{"/mnt/into-etcd/x", "leads to /var/lib/etcd/snapshots/x, which is or holds /var/lib/etcd"},
			{"/mnt/into-etc/hcpsnap", "leads to /etc/hcpsnap, which is outside the allowed places"},
			{"/home/core", "is outside the allowed places"},
			{"/tmp/x", "is on /tmp, a tmpfs that a reboot empties: pick a folder under /home/core, /mnt, /var, or set ALLOW_TMPFS=true"},
			{"/mnt/a b", "holds characters other than letters, digits and . _ - /"},
			{"mnt/x", "is not an absolute path"},
			{outside + "/x", "is on /tmp"},
		} {
			res := m.run(t, run{settings: map[string]string{EnvTargetDir: tc.dir, EnvKeep: "2"}, binds: map[string]string{"/mnt": mnt, "/var/lib": varLib}, calls: calls})
			want := fmt.Sprintf("hcpsnap-etcd-snapshot: error: TGT_DIR=%q %s", tc.dir, tc.why)
			if res.code != ExitBadSetting || res.stdout != "" || strings.Count(res.stderr, "\n") != 1 || !strings.HasPrefix(res.stderr, want) {
				t.Errorf("TGT_DIR=%s: want exit %d and one line starting %q:\n%s", tc.dir, ExitBadSetting, want, res)
			}
		}
		if got := entries(t, mnt); !slices.Equal(got, []string{"into-etc", "into-etcd"}) {
			t.Errorf("/mnt holds %q after refused runs, want only the links the test made", got)
		}
		if got := entries(t, filepath.Join(varLib, "etcd")); !slices.Equal(got, []string{"member"}) {
			t.Errorf("/var/lib/etcd holds %q after refused runs, want only member", got)
		}
		for _, p := range []string{"/etc/hcpsnap", filepath.Join(outside, "x")} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s exists after refused runs", p)
			}
		}
		if _, err := os.Stat(calls); err == nil {
			t.Error("cluster-backup.sh ran for a refused target")
		}
	})

	t.Run("target cannot be made", func(t *testing.T) {
		// An allowed target that mkdir fails on (a file in the way): exit 1
		// with the failing command, nothing written.
		mnt := t.TempDir()
		must(t, os.WriteFile(filepath.Join(mnt, "file"), []byte("x"), 0o600))
		res := m.run(t, run{settings: map[string]string{EnvTargetDir: "/mnt/file/etcd-snapshots", EnvKeep: "1"}, binds: map[string]string{"/mnt": mnt}})
		if res.code != ExitFailed {
			t.Errorf("want exit %d:\n%s", ExitFailed, res)
		}
		wantLines(t, res.stderr, `^hcpsnap-etcd-snapshot: error: unexpected failure \(exit 1\) at line \d+: mkdir -p -- "\$tgt"$`)
		if got := strings.Count(res.stderr, "hcpsnap-etcd-snapshot: error:"); got != 1 {
			t.Errorf("%d error lines, want one:\n%s", got, res)
		}
		if got := entries(t, mnt); !slices.Equal(got, []string{"file"}) {
			t.Errorf("/mnt holds %q", got)
		}
	})

	t.Run("tmpfs", func(t *testing.T) {
		tmp, err := os.MkdirTemp("/tmp", "hcpsnap-script-")
		must(t, err)
		t.Cleanup(func() { os.RemoveAll(tmp) })
		tgt := filepath.Join(tmp, "etcd-snapshots")
		res := m.run(t, run{settings: map[string]string{EnvTargetDir: tgt, EnvKeep: "1"}})
		if res.code != ExitBadSetting || !strings.Contains(res.stderr, "ALLOW_TMPFS=true") || strings.Count(res.stderr, "\n") != 1 {
			t.Errorf("/tmp without ALLOW_TMPFS: want exit %d and one line saying ALLOW_TMPFS=true:\n%s", ExitBadSetting, res)
		}
		if _, err := os.Lstat(tgt); err == nil {
			t.Errorf("%s exists after a refused run", tgt)
		}
		res = m.run(t, run{settings: map[string]string{EnvTargetDir: tgt, EnvKeep: "1", EnvAllowTmpfs: "true"}})
		if res.code != 0 {
			t.Fatalf("/tmp with ALLOW_TMPFS=true: want a run:\n%s", res)
		}
		wantLines(t, res.stderr, `^hcpsnap-etcd-snapshot: warning: TGT_DIR=`+regexp.QuoteMeta(tgt)+` is on /tmp, a tmpfs: its snapshots are lost when the node reboots`)
		got := completeIn(t, tgt)
		if len(got) != 1 {
			t.Fatalf("complete folders %q, want one", got)
		}
		m.checkComplete(t, tgt, got[0])
	})

	t.Run("default target and cluster-backup.sh", func(t *testing.T) {
		// As on a master: TGT_DIR /home/core/etcd-snapshots, CLUSTER_BACKUP
		// unset, so the script runs /usr/local/bin/cluster-backup.sh.
		home, localBin := t.TempDir(), t.TempDir()
		must(t, os.Mkdir(filepath.Join(home, "core"), 0o700))
		b, err := os.ReadFile(m.standin)
		must(t, err)
		must(t, os.WriteFile(filepath.Join(localBin, "cluster-backup.sh"), b, 0o755))
		res := m.run(t, run{settings: map[string]string{EnvHost: "master-0", EnvTargetDir: DefaultTargetDir, EnvKeep: "7", EnvClusterBackup: "-"},
			binds: map[string]string{"/home": home, "/usr/local/bin": localBin}})
		if res.code != 0 || strings.Contains(res.stderr, "hcpsnap-etcd-snapshot:") {
			t.Fatalf("want a run without warnings:\n%s", res)
		}
		tgt := filepath.Join(home, "core", "etcd-snapshots")
		got := completeIn(t, tgt)
		if len(got) != 1 {
			t.Fatalf("complete folders %q, want one", got)
		}
		wantLines(t, res.stdout,
			tag+`start on `+nodeName+`: TGT_DIR=/home/core/etcd-snapshots KEEP=7 cluster-backup /usr/local/bin/cluster-backup.sh$`,
			tag+`free space in /home/core/etcd-snapshots: \d+ MiB, etcd database \d+ MiB$`,
			tag+`created /home/core/etcd-snapshots/`+got[0]+`\.partial$`,
			`^snapshot db and kube resources are successfully saved to /home/core/etcd-snapshots/`+got[0]+`\.partial$`,
			tag+`cluster-backup\.sh succeeded in \d+s$`,
			tag+`renamed `+got[0]+`\.partial to `+got[0]+`: backup complete$`,
			tag+`retention KEEP=7: kept 1 complete backups in /home/core/etcd-snapshots \(newest `+got[0]+`, oldest `+got[0]+`\), removed 0$`)
		m.checkComplete(t, tgt, got[0])
		if fi, err := os.Stat(tgt); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, want a folder of mode 0700", tgt, fi.Mode())
		}
		if want := []string{LockName, got[0]}; !slices.Equal(entries(t, tgt), want) {
			t.Errorf("%s holds %q, want %q", tgt, entries(t, tgt), want)
		}
	})

	t.Run("retention with failed runs between", func(t *testing.T) {
		mnt := t.TempDir()
		tgt := filepath.Join(mnt, "etcd-snapshots")
		must(t, os.Mkdir(tgt, 0o700))
		// What the script must leave alone: files and folders of other
		// names, and a link named like an old complete folder.
		elsewhere := t.TempDir()
		must(t, os.WriteFile(filepath.Join(elsewhere, "precious"), []byte("x"), 0o600))
		must(t, os.WriteFile(filepath.Join(tgt, "notes.txt"), []byte("x"), 0o600))
		must(t, os.Mkdir(filepath.Join(tgt, "20200101T000000Z.bak"), 0o700))
		must(t, os.Mkdir(filepath.Join(tgt, "keep-me"), 0o700))
		must(t, os.Symlink(elsewhere, filepath.Join(tgt, "20200101T000001Z")))
		others := []string{"20200101T000000Z.bak", "20200101T000001Z", "keep-me", "notes.txt"}
		// What earlier runs left unfinished: removed by the next run.
		for _, n := range []string{"20200101T000002Z" + PartialSuffix, "20200101T000003Z" + RemovingSuffix} {
			must(t, os.MkdirAll(filepath.Join(tgt, n, "sub"), 0o700))
			must(t, os.WriteFile(filepath.Join(tgt, n, "sub", "snapshot_x.db"), []byte("x"), 0o600))
		}
		settings := map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "2"}
		binds := map[string]string{"/mnt": mnt}
		ok := func() backup {
			t.Helper()
			before := completeIn(t, tgt)
			res := m.run(t, run{settings: settings, binds: binds})
			if res.code != 0 {
				t.Fatalf("want a successful run:\n%s", res)
			}
			return m.checkComplete(t, tgt, newest(t, before, completeIn(t, tgt)))
		}
		failing := func(mode, line string, kept ...backup) {
			t.Helper()
			res := m.run(t, run{settings: settings, binds: binds, standin: map[string]string{"STANDIN_FAIL": mode}})
			if res.code != ExitFailed {
				t.Errorf("STANDIN_FAIL=%s: exit %d, want %d:\n%s", mode, res.code, ExitFailed, res)
			}
			wantLines(t, res.stderr, `^hcpsnap-etcd-snapshot: error: `+line+`.*; removed /mnt/etcd-snapshots/\d{8}T\d{6}Z\.partial; the complete backups are untouched \(newest: `+kept[len(kept)-1].name+`\)$`)
			unchanged(t, tgt, kept...)
			var names []string
			for _, b := range kept {
				names = append(names, b.name)
			}
			if got := completeIn(t, tgt); !slices.Equal(got, names) {
				t.Errorf("STANDIN_FAIL=%s: complete folders %q, want %q", mode, got, names)
			}
		}

		first := m.run(t, run{settings: settings, binds: binds})
		if first.code != 0 {
			t.Fatalf("want a successful run:\n%s", first)
		}
		wantLines(t, first.stdout,
			tag+`removed 20200101T000002Z\.partial, left by an earlier run that failed or was cut short$`,
			tag+`removed 20200101T000003Z\.removing, left by an earlier run that failed or was cut short$`)
		c1 := m.checkComplete(t, tgt, completeIn(t, tgt)[0])
		c2 := ok()
		failing("after-resources", `cluster-backup\.sh failed with exit code 1 after \d+s`, c1, c2)
		c3 := ok()
		if got := completeIn(t, tgt); !slices.Equal(got, []string{c2.name, c3.name}) {
			t.Errorf("KEEP=2 after three good runs: complete folders %q, want %q", got, []string{c2.name, c3.name})
		}
		unchanged(t, tgt, c2)
		failing("extra-file-exit-0", `cluster-backup\.sh exited 0 after \d+s, but its folder holds 1 non-empty snapshot_\*\.db, 1 non-empty static_kuberesources_\*\.tar\.gz and 1 other entries \(stray\.txt\); want exactly one of each`, c2, c3)
		failing("no-snapshot-exit-0", `cluster-backup\.sh exited 0 after \d+s, but its folder holds 0 non-empty snapshot_\*\.db`, c2, c3)
		failing("empty-snapshot-exit-0", `cluster-backup\.sh exited 0 after \d+s, but its folder holds 0 non-empty snapshot_\*\.db, 1 non-empty static_kuberesources_\*\.tar\.gz and 1 other entries \(snapshot_`, c2, c3)
		before := completeIn(t, tgt)
		res := m.run(t, run{settings: settings, binds: binds})
		if res.code != 0 {
			t.Fatalf("want a successful run:\n%s", res)
		}
		c4 := m.checkComplete(t, tgt, newest(t, before, completeIn(t, tgt)))
		wantLines(t, res.stdout,
			tag+`removed `+c2.name+` \(older than the newest KEEP=2\)$`,
			tag+`retention KEEP=2: kept 2 complete backups in /mnt/etcd-snapshots \(newest `+c4.name+`, oldest `+c3.name+`\), removed 1$`)
		unchanged(t, tgt, c3, c4)

		want := append([]string{c3.name, c4.name}, others...)
		want = append(want, LockName)
		sort.Strings(want)
		if got := entries(t, tgt); !slices.Equal(got, want) {
			t.Errorf("%s holds %q, want %q", tgt, got, want)
		}
		if _, err := os.Stat(filepath.Join(elsewhere, "precious")); err != nil {
			t.Errorf("the file behind the link named like a complete folder: %v", err)
		}
	})

	t.Run("only failures after one success", func(t *testing.T) {
		mnt := t.TempDir()
		tgt := filepath.Join(mnt, "etcd-snapshots")
		settings := map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "1"}
		binds := map[string]string{"/mnt": mnt}
		if res := m.run(t, run{settings: settings, binds: binds}); res.code != 0 {
			t.Fatalf("want a successful run:\n%s", res)
		}
		last := m.checkComplete(t, tgt, completeIn(t, tgt)[0])
		for _, mode := range []string{"after-resources", "no-snapshot-exit-0", "empty-snapshot-exit-0", "extra-file-exit-0", "after-resources"} {
			res := m.run(t, run{settings: settings, binds: binds, standin: map[string]string{"STANDIN_FAIL": mode}})
			if res.code != ExitFailed || !strings.Contains(res.stderr, "(newest: "+last.name+")") {
				t.Errorf("STANDIN_FAIL=%s: want exit %d naming the newest complete backup:\n%s", mode, ExitFailed, res)
			}
		}
		if got := entries(t, tgt); !slices.Equal(got, []string{LockName, last.name}) {
			t.Errorf("after five failed runs %s holds %q, want the lock and %s", tgt, got, last.name)
		}
		unchanged(t, tgt, last)
		m.checkComplete(t, tgt, last.name)
	})

	t.Run("two runs in one second", func(t *testing.T) {
		mnt := t.TempDir()
		tgt := filepath.Join(mnt, "etcd-snapshots")
		must(t, os.Mkdir(tgt, 0o700))
		// Folders named for this second and the next ones, as a run of the
		// same second would have left them: the run must take a later name.
		now := time.Now().UTC()
		var taken []string
		for i := -1; i <= 3; i++ {
			n := now.Add(time.Duration(i) * time.Second).Format("20060102T150405Z")
			taken = append(taken, n)
			must(t, os.Mkdir(filepath.Join(tgt, n), 0o700))
		}
		res := m.run(t, run{settings: map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "10"}, binds: map[string]string{"/mnt": mnt}})
		if res.code != 0 {
			t.Fatalf("want a successful run:\n%s", res)
		}
		got := newest(t, taken, completeIn(t, tgt))
		if got <= taken[len(taken)-1] {
			t.Errorf("the run took %s, want a name after %s", got, taken[len(taken)-1])
		}
		m.checkComplete(t, tgt, got)
		for _, n := range taken {
			if entries(t, filepath.Join(tgt, n)) != nil {
				t.Errorf("%s was written to", n)
			}
		}
	})

	t.Run("clock behind the newest folder", func(t *testing.T) {
		mnt := t.TempDir()
		tgt := filepath.Join(mnt, "etcd-snapshots")
		future := "29991231T235959Z"
		must(t, os.MkdirAll(filepath.Join(tgt, future), 0o700))
		res := m.run(t, run{settings: map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "1"}, binds: map[string]string{"/mnt": mnt}})
		if res.code != 0 {
			t.Fatalf("want a successful run:\n%s", res)
		}
		got := completeIn(t, tgt)
		if len(got) != 2 || got[1] != future {
			t.Fatalf("KEEP=1 with a folder from the future: complete folders %q, want this run's and %s", got, future)
		}
		m.checkComplete(t, tgt, got[0])
		wantLines(t, res.stderr, `^hcpsnap-etcd-snapshot: warning: `+future+` is newer than this run's `+got[0]+`: is the clock right\? Both are kept$`)
	})

	t.Run("lock held", func(t *testing.T) {
		mnt := t.TempDir()
		tgt := filepath.Join(mnt, "etcd-snapshots")
		partial := filepath.Join(tgt, "20200101T000000Z"+PartialSuffix)
		must(t, os.MkdirAll(partial, 0o700))
		f, err := os.OpenFile(filepath.Join(tgt, LockName), os.O_CREATE|os.O_WRONLY, 0o600)
		must(t, err)
		defer f.Close()
		must(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
		calls := filepath.Join(t.TempDir(), "calls")
		res := m.run(t, run{settings: map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "1"}, binds: map[string]string{"/mnt": mnt}, calls: calls})
		if res.code != ExitFailed || !strings.Contains(res.stderr, "another run holds the lock /mnt/etcd-snapshots/"+LockName+": not starting") {
			t.Errorf("want exit %d, another run holds the lock:\n%s", ExitFailed, res)
		}
		if _, err := os.Stat(partial); err != nil {
			t.Errorf("the folder of the run holding the lock: %v", err)
		}
		if _, err := os.Stat(calls); err == nil {
			t.Error("cluster-backup.sh ran while another run held the lock")
		}
		if got := entries(t, tgt); !slices.Equal(got, []string{LockName, filepath.Base(partial)}) {
			t.Errorf("%s holds %q", tgt, got)
		}
	})

	t.Run("too little space", func(t *testing.T) {
		// A 1 MiB tmpfs as /mnt, an etcd database of 4 MiB.
		varLib := t.TempDir()
		db := filepath.Join(varLib, "etcd", "member", "snap", "db")
		must(t, os.MkdirAll(filepath.Dir(db), 0o700))
		must(t, os.WriteFile(db, nil, 0o600))
		must(t, os.Truncate(db, 4<<20))
		calls := filepath.Join(t.TempDir(), "calls")
		res := m.run(t, run{settings: map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "1"},
			binds: map[string]string{"/var/lib": varLib}, tmpfs: map[string]string{"/mnt": "1m"}, calls: calls})
		if res.code != ExitFailed {
			t.Errorf("want exit %d:\n%s", ExitFailed, res)
		}
		wantLines(t, res.stderr, `^hcpsnap-etcd-snapshot: error: only \d+ MiB free in /mnt/etcd-snapshots, the etcd database is 4 MiB \(needs 4 MiB\): not starting; the complete backups are untouched \(newest: none\)$`)
		if _, err := os.Stat(calls); err == nil {
			t.Error("cluster-backup.sh ran without the space for a snapshot")
		}
	})

	t.Run("stopped by systemd", func(t *testing.T) {
		// systemctl stop, or TimeoutStartSec=, sends SIGTERM to every process
		// of the service: the run's folder goes, the complete ones stay.
		mnt := t.TempDir()
		tgt := filepath.Join(mnt, "etcd-snapshots")
		settings := map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "1"}
		binds := map[string]string{"/mnt": mnt}
		if res := m.run(t, run{settings: settings, binds: binds}); res.code != 0 {
			t.Fatalf("want a successful run:\n%s", res)
		}
		last := m.checkComplete(t, tgt, completeIn(t, tgt)[0])
		res := m.run(t, run{settings: settings, binds: binds, standin: map[string]string{"STANDIN_SLEEP": "60"}, started: func(cmd *exec.Cmd) {
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				for _, n := range entries(t, tgt) {
					if strings.HasSuffix(n, PartialSuffix) && len(entries(t, filepath.Join(tgt, n))) > 0 {
						must(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM))
						return
					}
				}
			}
			t.Error("no .partial folder with cluster-backup.sh's output after 30s")
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}})
		if res.code != 143 {
			t.Errorf("want exit 143 (SIGTERM):\n%s", res)
		}
		wantLines(t, res.stderr, `^hcpsnap-etcd-snapshot: error: run ended early \(exit 143\); removed /mnt/etcd-snapshots/\d{8}T\d{6}Z\.partial$`)
		if got := entries(t, tgt); !slices.Equal(got, []string{LockName, last.name}) {
			t.Errorf("%s holds %q, want the lock and %s", tgt, got, last.name)
		}
		unchanged(t, tgt, last)
	})

	t.Run("etcd "+versions[1], func(t *testing.T) {
		m := newMaster(t, versions[1])
		mnt := t.TempDir()
		res := m.run(t, run{settings: map[string]string{EnvTargetDir: "/mnt/etcd-snapshots", EnvKeep: "1"}, binds: map[string]string{"/mnt": mnt}})
		if res.code != 0 {
			t.Fatalf("want a successful run:\n%s", res)
		}
		tgt := filepath.Join(mnt, "etcd-snapshots")
		got := completeIn(t, tgt)
		if len(got) != 1 {
			t.Fatalf("complete folders %q, want one", got)
		}
		m.checkComplete(t, tgt, got[0])
	})
}
