package management

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ign "github.com/coreos/ignition/v2/config/v3_2"
)

func testConfig() Config {
	return Config{
		Name: DefaultName, Host: "master-0.example.com", OnCalendar: "Mon..Fri *-*-* 2:30", TimeZone: "Europe/Paris",
		TargetDir: DefaultTargetDir, Keep: DefaultKeep,
	}
}

// lines are the lines of a unit, without comments and blank lines.
func lines(unit string) []string {
	var out []string
	for _, l := range strings.Split(unit, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func TestMachineConfig(t *testing.T) {
	for _, tmpfs := range []bool{false, true} {
		t.Run("allow-tmpfs="+strconv.FormatBool(tmpfs), func(t *testing.T) {
			c := testConfig()
			if tmpfs {
				c.TargetDir, c.AllowTmpfs = "/tmp/etcd-snapshots", true
			}
			mc, err := c.MachineConfig()
			if err != nil {
				t.Fatal(err)
			}
			if mc.GetAPIVersion() != "machineconfiguration.openshift.io/v1" || mc.GetKind() != "MachineConfig" || mc.GetName() != DefaultName {
				t.Errorf("object %s %s %s", mc.GetAPIVersion(), mc.GetKind(), mc.GetName())
			}
			wantLabels := map[string]string{"machineconfiguration.openshift.io/role": "master", "app.kubernetes.io/managed-by": "hcpsnap"}
			if got := mc.GetLabels(); len(got) != len(wantLabels) || got["machineconfiguration.openshift.io/role"] != "master" || got["app.kubernetes.io/managed-by"] != "hcpsnap" {
				t.Errorf("labels %v, want %v", got, wantLabels)
			}
			spec := mc.Object["spec"].(map[string]any)
			if len(spec) != 1 {
				t.Errorf("spec sets %d fields, want only config: %v", len(spec), spec)
			}
			raw, err := json.Marshal(spec["config"])
			if err != nil {
				t.Fatal(err)
			}
			// Ignition's own parser, on the JSON that is applied.
			cfg, rpt, err := ign.Parse(raw)
			if err != nil || len(rpt.Entries) > 0 {
				t.Fatalf("Ignition 3.2.0 parse: %v %s", err, rpt.String())
			}
			if cfg.Ignition.Version != "3.2.0" {
				t.Errorf("ignition.version %s", cfg.Ignition.Version)
			}
			if len(cfg.Storage.Files) != 1 {
				t.Fatalf("%d files, want the script only", len(cfg.Storage.Files))
			}
			f := cfg.Storage.Files[0]
			if f.Path != ScriptPath || f.Mode == nil || *f.Mode != 0o755 || f.Overwrite == nil || !*f.Overwrite {
				t.Errorf("file %s mode %v overwrite %v", f.Path, f.Mode, f.Overwrite)
			}
			src := *f.Contents.Source
			b64, ok := strings.CutPrefix(src, "data:;base64,")
			if !ok {
				t.Fatalf("source %.40q... is not a data:;base64, URL", src)
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, Script()) {
				t.Error("the file's contents are not the script")
			}

			if len(cfg.Systemd.Units) != 2 {
				t.Fatalf("%d units", len(cfg.Systemd.Units))
			}
			svc, tmr := cfg.Systemd.Units[0], cfg.Systemd.Units[1]
			if svc.Name != ServiceName || svc.Enabled != nil {
				t.Errorf("service %s enabled %v: only the timer is enabled", svc.Name, svc.Enabled)
			}
			if tmr.Name != TimerName || tmr.Enabled == nil || !*tmr.Enabled {
				t.Errorf("timer %s enabled %v", tmr.Name, tmr.Enabled)
			}
			svcLines := lines(*svc.Contents)
			wantEnv := []string{`Environment="HOST=master-0.example.com"`, `Environment="TGT_DIR=` + c.TargetDir + `"`, `Environment="KEEP=7"`}
			if tmpfs {
				wantEnv = append(wantEnv, `Environment="ALLOW_TMPFS=true"`)
			}
			var env []string
			for _, l := range svcLines {
				if strings.HasPrefix(l, "Environment=") {
					env = append(env, l)
				}
			}
			if !slices.Equal(env, wantEnv) {
				t.Errorf("Environment lines %q, want %q", env, wantEnv)
			}
			for _, want := range []string{"Type=oneshot", "ExecStart=" + ScriptPath, "[Service]"} {
				if !slices.Contains(svcLines, want) {
					t.Errorf("service lacks %q:\n%s", want, *svc.Contents)
				}
			}
			if strings.Contains(*svc.Contents, "[Install]") {
				t.Errorf("service has an [Install] section: only the timer starts it")
			}
			tmrLines := lines(*tmr.Contents)
			for _, want := range []string{"OnCalendar=Mon..Fri *-*-* 02:30:00 Europe/Paris", "Persistent=true", "Unit=" + ServiceName, "[Install]", "WantedBy=timers.target"} {
				if !slices.Contains(tmrLines, want) {
					t.Errorf("timer lacks %q:\n%s", want, *tmr.Contents)
				}
			}
			if i, j := slices.Index(tmrLines, "[Install]"), slices.Index(tmrLines, "WantedBy=timers.target"); j != i+1 {
				t.Errorf("WantedBy= is not in [Install]:\n%s", *tmr.Contents)
			}
			if a := mc.GetAnnotations(); a[AnnotationHost] != c.Host || a[AnnotationOnCalendar] != "Mon..Fri *-*-* 02:30:00 Europe/Paris" {
				t.Errorf("annotations %v", a)
			}
		})
	}
}

func TestIgnitionRefusesTheEtcdOperatorHeader(t *testing.T) {
	_, err := testConfig().ignition([]byte("#!/bin/bash\n### Created by cluster-etcd-operator\nexit 0\n"))
	if err == nil || !strings.Contains(err.Error(), "cluster-etcd-operator") {
		t.Fatalf("ignition of a script with the etcd operator's header: %v, want a refusal", err)
	}
	if _, err := testConfig().ignition([]byte("#!/bin/bash\nexit 0\n")); err != nil {
		t.Fatalf("ignition of a plain script: %v", err)
	}
	if bytes.Contains(Script(), []byte(etcdOperatorHeader)) {
		t.Fatal("the snapshot script carries the etcd operator's header")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"name with capitals", func(c *Config) { c.Name = "99-Master" }, "name"},
		{"empty name", func(c *Config) { c.Name = "" }, "name"},
		{"no host", func(c *Config) { c.Host = "" }, "host"},
		{"host with a space", func(c *Config) { c.Host = "master 0" }, "host"},
		{"host with a quote", func(c *Config) { c.Host = `m"0` }, "host"},
		{"cron syntax", func(c *Config) { c.OnCalendar = "0 2 * * *" }, "on-calendar"},
		{"zone in the calendar", func(c *Config) { c.OnCalendar = "daily Europe/Paris" }, "on-calendar"},
		{"UTC in the calendar", func(c *Config) { c.OnCalendar = "daily UTC" }, "on-calendar"},
		{"empty calendar", func(c *Config) { c.OnCalendar = "" }, "on-calendar"},
		{"unknown zone", func(c *Config) { c.TimeZone = "Mars/Olympus" }, "time-zone"},
		{"Local zone", func(c *Config) { c.TimeZone = "Local" }, "time-zone"},
		{"empty zone", func(c *Config) { c.TimeZone = "" }, "time-zone"},
		{"zone path", func(c *Config) { c.TimeZone = "../zoneinfo/UTC" }, "time-zone"},
		{"etcd's folder", func(c *Config) { c.TargetDir = "/var/lib/etcd/backup" }, "target-dir"},
		{"tmp without leave", func(c *Config) { c.TargetDir = "/tmp/snap" }, "target-dir"},
		{"relative", func(c *Config) { c.TargetDir = "snap" }, "target-dir"},
		{"keep 0", func(c *Config) { c.Keep = 0 }, "keep"},
		{"keep too many", func(c *Config) { c.Keep = MaxKeep + 1 }, "keep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.edit(&c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Validate = %v, want an error of %s", err, tt.field)
			}
			if _, err := c.MachineConfig(); err == nil {
				t.Error("MachineConfig rendered an invalid config")
			}
		})
	}
	c := testConfig()
	c.Keep = MaxKeep
	if err := c.Validate(); err != nil {
		t.Errorf("keep %d: %v", MaxKeep, err)
	}
}

// TestTimerCalendarAgreesWithSystemd checks the timer's OnCalendar= value
// (the event and the zone) with systemd-analyze calendar: accepted, and
// the same next elapses as Elapses.
func TestTimerCalendarAgreesWithSystemd(t *testing.T) {
	bin := systemdAnalyze(t)
	base := time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct{ cal, zone string }{
		{"*-*-* 02:00:00", "UTC"}, {"Mon..Fri *-*-* 2:30", "Europe/Paris"}, {"*-*-* 0/6:00", "America/New_York"},
		{"weekly", "Asia/Kolkata"}, {"*-*~1 23:00", "Australia/Sydney"},
	} {
		c := testConfig()
		c.OnCalendar, c.TimeZone = tt.cal, tt.zone
		value, err := c.timerCalendar()
		if err != nil {
			t.Fatal(err)
		}
		want := analyzeCalendar(t, bin, value, base)
		if !want.valid || want.normalized != value {
			t.Errorf("OnCalendar=%s: systemd says valid %t, normalized %q", value, want.valid, want.normalized)
			continue
		}
		ours, err := c.Elapses(base, analyzeIterations)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ours {
			got = append(got, e.UTC().Format("Mon 2006-01-02 15:04:05")+" UTC")
		}
		if !slices.Equal(got, want.elapses) {
			t.Errorf("OnCalendar=%s: elapses %q, systemd %q", value, got, want.elapses)
		}
	}
}

// TestUnitsVerify runs systemd-analyze verify on the two units, as systemd
// on a master would load them: in a private mount namespace where an
// executable copy of the script is at ScriptPath (verify checks that
// ExecStart= exists). Any output is a failure: verify reports some problems
// on stderr and still exits 0.
func TestUnitsVerify(t *testing.T) {
	bin := systemdAnalyze(t)
	if os.Geteuid() != 0 {
		t.Skip("systemd-analyze verify needs root here (a private mount namespace with the script at " + ScriptPath + "); run as root")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is missing: %v", err)
	}
	for _, tmpfs := range []bool{false, true} {
		c := testConfig()
		if tmpfs {
			c.TargetDir, c.AllowTmpfs = "/tmp/etcd-snapshots", true
		}
		service, err := c.ServiceUnit()
		if err != nil {
			t.Fatal(err)
		}
		timer, err := c.TimerUnit()
		if err != nil {
			t.Fatal(err)
		}
		units, bindir := t.TempDir(), t.TempDir()
		for name, body := range map[string]string{ServiceName: service, TimerName: timer} {
			if err := os.WriteFile(filepath.Join(units, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(bindir, filepath.Base(ScriptPath)), Script(), 0o755); err != nil {
			t.Fatal(err)
		}
		script := `mount --bind "$1" "$2" && exec "$3" verify --man=no "$4" "$5"`
		cmd := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh",
			bindir, filepath.Dir(ScriptPath), bin, filepath.Join(units, ServiceName), filepath.Join(units, TimerName))
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify (allow-tmpfs %t): %v\n%s\nservice:\n%s\ntimer:\n%s", tmpfs, err, out, service, timer)
		}
	}
}

// TestUnitsVerifyCatchesABadUnit keeps TestUnitsVerify honest: the same
// run on a unit with a typo reports it.
func TestUnitsVerifyCatchesABadUnit(t *testing.T) {
	bin := systemdAnalyze(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root, as TestUnitsVerify")
	}
	dir := t.TempDir()
	bad := "[Unit]\nDescription=x\n[Service]\nType=oneshot\nExecStrat=/bin/true\nExecStart=/bin/true\n"
	if err := os.WriteFile(filepath.Join(dir, "hcpsnap-bad.service"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(bin, "verify", "--man=no", filepath.Join(dir, "hcpsnap-bad.service")).CombinedOutput()
	if len(bytes.TrimSpace(out)) == 0 {
		t.Fatal("systemd-analyze verify says nothing of an unknown key: the verify test could not fail")
	}
}
