package management

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// These tests need bash only (as `make` does); the runs of the script with a
// real etcd, as root in a mount namespace, are in script_e2e_test.go.

// contractLine is a line of the script that mirrors a Go value:
// `readonly NAME=VALUE # contract: goName`, VALUE a word, a quoted word or a
// parenthesized list of words.
var contractLine = regexp.MustCompile(`^readonly [A-Z_]+=(.*) # contract: (\w+)$`)

// scriptContract reads the contract lines of the script: Go name -> words.
func scriptContract(t *testing.T) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for i, line := range strings.Split(string(Script()), "\n") {
		m := contractLine.FindStringSubmatch(line)
		if m == nil {
			if strings.Contains(line, "# contract:") {
				t.Errorf("script line %d is marked contract but does not read `readonly NAME=VALUE # contract: goName`: %q", i+1, line)
			}
			continue
		}
		value, name := m[1], m[2]
		if _, dup := got[name]; dup {
			t.Errorf("script line %d: a second contract line for %s", i+1, name)
		}
		switch {
		case strings.HasPrefix(value, "(") && strings.HasSuffix(value, ")"):
			got[name] = strings.Fields(value[1 : len(value)-1])
		case len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'':
			got[name] = []string{value[1 : len(value)-1]}
		case strings.ContainsAny(value, `'"$ ()`):
			t.Errorf("script line %d: contract value %q is neither a plain word, a single-quoted word nor a list", i+1, value)
		default:
			got[name] = []string{value}
		}
	}
	return got
}

// TestScriptContractMatchesGo holds the script's lists and names to the Go
// values they mirror, so the two checks of a target folder cannot drift.
func TestScriptContractMatchesGo(t *testing.T) {
	want := map[string][]string{
		"allowedRoots":         allowedRoots,
		"tmpRoot":              {tmpRoot},
		"forbidden":            forbidden,
		"completeFolder":       {completeFolder.String()},
		"PartialSuffix":        {PartialSuffix},
		"RemovingSuffix":       {RemovingSuffix},
		"LockName":             {LockName},
		"DefaultClusterBackup": {DefaultClusterBackup},
		"ExitFailed":           {strconv.Itoa(ExitFailed)},
		"ExitBadSetting":       {strconv.Itoa(ExitBadSetting)},
		"MaxKeep":              {strconv.Itoa(MaxKeep)},
	}
	got := scriptContract(t)
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("the script has no contract line for %s", name)
		case strings.Join(g, "\x00") != strings.Join(w, "\x00"):
			t.Errorf("the script's %s is %q, Go's is %q", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the script's contract line for %s names nothing this test compares", name)
		}
	}
	for _, env := range []string{EnvHost, EnvTargetDir, EnvKeep, EnvAllowTmpfs, EnvClusterBackup} {
		if !bytes.Contains(Script(), []byte("${"+env+":-")) {
			t.Errorf("the script never reads $%s", env)
		}
	}
}

// TestScriptText checks what the node and the etcd operator see of the
// script: a bash script, without the header that makes the operator delete
// it, that never traces its commands into the journal.
func TestScriptText(t *testing.T) {
	s := string(Script())
	if !strings.HasPrefix(s, "#!/bin/bash\n") {
		t.Errorf("the script does not start with #!/bin/bash: %q", s[:min(len(s), 40)])
	}
	if strings.Contains(s, "### Created by cluster-etcd-operator") {
		t.Error("the script holds the header `### Created by cluster-etcd-operator`: the etcd operator deletes such files")
	}
	for _, bad := range []string{"set -x", "set -o xtrace", "xtrace", "\r"} {
		if strings.Contains(s, bad) {
			t.Errorf("the script holds %q", bad)
		}
	}
}

// TestScriptSyntax runs bash -n and shellcheck (Debian's shellcheck package,
// which make unit installs) on the script; without shellcheck it fails unless
// HCPSNAP_SHELLCHECK_OPTIONAL is set.
func TestScriptSyntax(t *testing.T) {
	path := writeScript(t)
	if out, err := exec.Command("bash", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("HCPSNAP_SHELLCHECK_OPTIONAL") != "" {
			t.Skip("shellcheck is not installed and HCPSNAP_SHELLCHECK_OPTIONAL is set: only bash -n ran")
		}
		t.Fatal("shellcheck is not installed: apt-get install shellcheck (make unit does), or set HCPSNAP_SHELLCHECK_OPTIONAL=1")
	}
	if out, err := exec.Command(sc, "--shell=bash", "--severity=style", path).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// writeScript writes the script as the MachineConfig installs it: mode 0755.
func writeScript(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hcpsnap-etcd-snapshot.sh")
	if err := os.WriteFile(path, Script(), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// validate runs `script --validate` with env (and nothing else of the
// test's environment but PATH); it returns the exit code and both outputs.
func validate(t *testing.T, script string, env map[string]string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(script, "--validate")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, o.String(), e.String()
}

// targetCases are target folders for both checks: TestCheckTargetDir's, and
// more around each rule's edges.
var targetCases = []string{
	DefaultTargetDir, "/home/core/backups/etcd", "/mnt/etcd", "/var/etcd-snapshots", "/var/tmp/etcd",
	"/var/home/core/etcd-snapshots", "/tmp/etcd", "/tmp", "", "home/core/x", "/home/core/../../etc", "/home/core/x/",
	"/home/core", "/var", "/var/lib", "/var/lib/etcd", "/var/lib/etcd/backup", "/var/lib/etcd-backup", "/var/run/etcd",
	"/var/usrlocal/bin", "/etc/etcd", "/mnt", "/mnt/a b", "/mnt/a\"b", "/mnt/$(reboot)", "/mnt/a\nb", "/", "//mnt/x",
	"/mnt//x", "/mnt/./x", "/mnt/.", "/mnt/..", "/mnt/...", "/mnt/.x", "/mnt/x.", "/mnt/-x", "/home/core2/x",
	"/home/corex", "/home/core/x", "/homes/core/x", "/mnt2/x", "/varx/y", "/tmpx/y", "/tmp/x/../y", "/var/lib/kubelet",
	"/var/lib/kubelet/pods", "/var/lib/containers/x", "/var/lib/cni/x", "/var/lock/x", "/var/lib/ostree/x",
	"/var/lib/rpm-ostree", "/var/lib/etcd.old/x", "/var/lib/etc", "/mnt/x*", "/mnt/x?", "/mnt/[x]", "/mnt/x\\y",
	"/mnt/é", "/mnt/x\ty", "/mnt/~", "/MNT/x", "/var/LIB/etcd", "/tmp/.", "/tmp/a/b/c",
}

// TestScriptChecksTargetLikeGo runs the script's own check of TGT_DIR on
// every case above and on random paths, and compares it with CheckTargetDir:
// the same folders are accepted, the same warned about (/tmp), the rest
// refused with exit 2 and one line naming TGT_DIR.
func TestScriptChecksTargetLikeGo(t *testing.T) {
	script := writeScript(t)
	cases := append([]string(nil), targetCases...)
	rng := rand.New(rand.NewSource(13))
	parts := []string{"/", "/", "/", "home", "core", "mnt", "var", "lib", "etcd", "tmp", "run", "kubelet", ".", "..", "x", "-", "_", " ", "$", "*"}
	for len(cases) < len(targetCases)+150 {
		var b strings.Builder
		for n := 1 + rng.Intn(7); n > 0; n-- {
			b.WriteString(parts[rng.Intn(len(parts))])
		}
		cases = append(cases, b.String())
	}
	for _, dir := range cases {
		for _, allow := range []bool{false, true} {
			env := map[string]string{EnvHost: "master-0", EnvTargetDir: dir, EnvKeep: "7", EnvAllowTmpfs: strconv.FormatBool(allow), EnvClusterBackup: "/bin/true"}
			code, stdout, stderr := validate(t, script, env)
			warning, err := CheckTargetDir(dir, allow)
			name := fmt.Sprintf("TGT_DIR=%q ALLOW_TMPFS=%v", dir, allow)
			switch {
			case err == nil && code != 0:
				t.Errorf("%s: Go accepts, the script exits %d: %s", name, code, stderr)
			case err != nil && code != ExitBadSetting:
				t.Errorf("%s: Go refuses (%v), the script exits %d: %s%s", name, err, code, stdout, stderr)
			case err != nil && (!strings.HasPrefix(stderr, "hcpsnap-etcd-snapshot: error: TGT_DIR=") || strings.Count(stderr, "\n") != strings.Count(dir, "\n")+1 || stdout != ""):
				t.Errorf("%s: refused, but not with one line naming TGT_DIR: stdout %q, stderr %q", name, stdout, stderr)
			case err == nil && (warning != "") != strings.Contains(stderr, "warning: TGT_DIR="):
				t.Errorf("%s: Go warns %q, the script's stderr is %q", name, warning, stderr)
			}
		}
	}
}

// TestScriptChecksOtherSettings covers the settings besides TGT_DIR: each bad
// value is refused with exit 2 and one line naming it.
func TestScriptChecksOtherSettings(t *testing.T) {
	script := writeScript(t)
	notExecutable := filepath.Join(t.TempDir(), "cluster-backup.sh")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := map[string]string{EnvHost: "master-0.example.com", EnvTargetDir: DefaultTargetDir, EnvKeep: "7", EnvClusterBackup: "/bin/true"}
	for _, tc := range []struct {
		env, value string // value "-": unset
		ok         bool
	}{
		{env: EnvHost, value: "master-0", ok: true},
		{env: EnvHost, value: "-"},
		{env: EnvHost, value: ""},
		{env: EnvHost, value: "master 0"},
		{env: EnvHost, value: "master-0."},
		{env: EnvHost, value: "-master"},
		{env: EnvHost, value: "m;reboot"},
		{env: EnvKeep, value: "1", ok: true},
		{env: EnvKeep, value: strconv.Itoa(MaxKeep), ok: true},
		{env: EnvKeep, value: strconv.Itoa(MaxKeep + 1)},
		{env: EnvKeep, value: "0"},
		{env: EnvKeep, value: "-1"},
		{env: EnvKeep, value: "08"},
		{env: EnvKeep, value: "2x"},
		{env: EnvKeep, value: " 2"},
		{env: EnvKeep, value: ""},
		{env: EnvKeep, value: "-"},
		{env: EnvAllowTmpfs, value: "false", ok: true},
		{env: EnvAllowTmpfs, value: "-", ok: true},
		{env: EnvAllowTmpfs, value: "yes"},
		{env: EnvAllowTmpfs, value: "True"},
		{env: EnvClusterBackup, value: "-", ok: false}, // /usr/local/bin/cluster-backup.sh is on masters only
		{env: EnvClusterBackup, value: "true"},
		{env: EnvClusterBackup, value: "/nonexistent/cluster-backup.sh"},
		{env: EnvClusterBackup, value: notExecutable},
	} {
		env := map[string]string{}
		for k, v := range good {
			env[k] = v
		}
		if tc.value == "-" {
			delete(env, tc.env)
		} else {
			env[tc.env] = tc.value
		}
		if tc.env == EnvClusterBackup && tc.value == "-" {
			if _, err := os.Stat(DefaultClusterBackup); err == nil {
				continue // this machine is a master after all
			}
		}
		code, stdout, stderr := validate(t, script, env)
		name := fmt.Sprintf("%s=%q", tc.env, tc.value)
		switch {
		case tc.ok && code != 0:
			t.Errorf("%s: exit %d, want 0: %s", name, code, stderr)
		case tc.ok && !strings.HasPrefix(stdout, "hcpsnap-etcd-snapshot: settings ok:"):
			t.Errorf("%s: stdout %q", name, stdout)
		case !tc.ok && code != ExitBadSetting:
			t.Errorf("%s: exit %d, want %d: %s%s", name, code, ExitBadSetting, stdout, stderr)
		case !tc.ok && (!strings.HasPrefix(stderr, "hcpsnap-etcd-snapshot: error: "+tc.env+"=") || strings.Count(stderr, "\n") != 1 || stdout != ""):
			t.Errorf("%s: not one line naming %s: stdout %q, stderr %q", name, tc.env, stdout, stderr)
		}
	}
	// Anything but --validate on the command line is refused too.
	cmd := exec.Command(script, "--force")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var exit *exec.ExitError
	if out, err := cmd.CombinedOutput(); !errors.As(err, &exit) || exit.ExitCode() != ExitBadSetting || !strings.Contains(string(out), "usage:") {
		t.Errorf("script --force: %v, %q; want exit %d with a usage line", err, out, ExitBadSetting)
	}
}

// TestScriptJournalPriorities: with stderr on the stream that systemd names
// in JOURNAL_STREAM, each line carries its syslog priority (<3> for errors,
// <4> warnings, <6> the rest), so `journalctl -p err` shows failures; with
// JOURNAL_STREAM naming another stream, the lines are plain.
func TestScriptJournalPriorities(t *testing.T) {
	script := writeScript(t)
	stream, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stream.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		journal string
		tgt     string
		want    []string
	}{
		{journal: fmt.Sprintf("%d:%d", st.Dev, st.Ino), tgt: "/etc/x", want: []string{"<3>hcpsnap-etcd-snapshot: error: TGT_DIR="}},
		{journal: fmt.Sprintf("%d:%d", st.Dev, st.Ino), tgt: "/tmp/x", want: []string{"<4>hcpsnap-etcd-snapshot: warning: TGT_DIR=", "<6>hcpsnap-etcd-snapshot: settings ok:"}},
		{journal: fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), tgt: "/etc/x", want: []string{"hcpsnap-etcd-snapshot: error: TGT_DIR="}},
		{journal: "", tgt: "/tmp/x", want: []string{"hcpsnap-etcd-snapshot: warning: TGT_DIR=", "hcpsnap-etcd-snapshot: settings ok:"}},
	} {
		if err := stream.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(script, "--validate")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "JOURNAL_STREAM=" + tc.journal,
			EnvHost + "=m", EnvTargetDir + "=" + tc.tgt, EnvKeep + "=1", EnvAllowTmpfs + "=true", EnvClusterBackup + "=/bin/true"}
		cmd.Stdout, cmd.Stderr = stream, stream // as systemd connects both
		_ = cmd.Run()
		out, err := os.ReadFile(stream.Name())
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if len(lines) != len(tc.want) {
			t.Errorf("JOURNAL_STREAM=%q TGT_DIR=%s: lines %q, want %d", tc.journal, tc.tgt, lines, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("JOURNAL_STREAM=%q TGT_DIR=%s: line %q, want it to start with %q", tc.journal, tc.tgt, lines[i], w)
			}
		}
	}
}
