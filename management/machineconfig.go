package management

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	ign "github.com/coreos/ignition/v2/config/v3_2"
	igntypes "github.com/coreos/ignition/v2/config/v3_2/types"
	mcfgv1 "github.com/openshift/api/machineconfiguration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultName is the MachineConfig's name unless told: 99- sorts it after
// OpenShift's own MachineConfigs, "master" says which pool renders it.
const DefaultName = "99-master-hcpsnap-etcd-snapshot"

// DefaultOnCalendar is when snapshots are taken unless told: every day at
// 02:00 (in the time zone of the timer).
const DefaultOnCalendar = "*-*-* 02:00:00"

// DefaultKeep and MaxKeep bound how many complete backups the script keeps:
// each is a full etcd snapshot of the management cluster on the master's
// root disk.
const (
	DefaultKeep = 7
	MaxKeep     = 100
)

// IgnitionVersion is the Ignition spec of the MachineConfig's config: 3.2.0,
// which the Machine Config Operator accepts from OpenShift 4.7 on.
const IgnitionVersion = "3.2.0"

// Labels of the MachineConfig. LabelManagedBy/ManagedBy are the ownership
// label of everything hcpsnap writes (schedule's too): --apply and --delete
// touch a MachineConfig only when it carries it.
const (
	LabelRole      = "machineconfiguration.openshift.io/role"
	RoleMaster     = "master"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "hcpsnap"
	// FieldManager is the server-side apply field manager of --apply.
	FieldManager = "hcpsnap"
)

// Annotations of the MachineConfig that say, for a person reading it, what
// it does (the truth is in its units).
const (
	AnnotationHost       = "hcpsnap.io/host"
	AnnotationOnCalendar = "hcpsnap.io/on-calendar"
)

// etcdOperatorHeader marks a file that the etcd operator created; it deletes
// such files from the masters, so the script must never carry it.
const etcdOperatorHeader = "### Created by cluster-etcd-operator"

// MachineConfigGVR is the resource of MachineConfigs.
var MachineConfigGVR = schema.GroupVersionResource{Group: mcfgv1.GroupName, Version: "v1", Resource: "machineconfigs"}

// Config is what the MachineConfig installs on the masters.
type Config struct {
	// Name of the MachineConfig.
	Name string
	// Host is the node name of the one master that takes snapshots.
	Host string
	// OnCalendar is the timer's calendar event without a time zone;
	// TimeZone (IANA) is written after it.
	OnCalendar string
	TimeZone   string
	// TargetDir receives the snapshots (CheckTargetDir).
	TargetDir  string
	AllowTmpfs bool
	// Keep is how many complete backups the script keeps.
	Keep int
}

// Validate checks every field; each error says which setting is wrong and
// what to do, and the caller names the flag.
func (c Config) Validate() error {
	if errs := validation.IsDNS1123Subdomain(c.Name); len(errs) > 0 {
		return &FieldError{Field: "name", Err: fmt.Errorf("%q is not a MachineConfig name: %s", c.Name, errs[0])}
	}
	if c.Host == "" {
		return &FieldError{Field: "host", Err: errors.New("is required: give the node name of the master that takes the snapshots (kubectl get nodes -l node-role.kubernetes.io/master)")}
	}
	if errs := validation.IsDNS1123Subdomain(c.Host); len(errs) > 0 {
		return &FieldError{Field: "host", Err: fmt.Errorf("%q is not a node name: %s", c.Host, errs[0])}
	}
	if _, _, err := c.Calendar(); err != nil {
		return err
	}
	if _, err := CheckTargetDir(c.TargetDir, c.AllowTmpfs); err != nil {
		return &FieldError{Field: "target-dir", Err: err}
	}
	if c.Keep < 1 || c.Keep > MaxKeep {
		return &FieldError{Field: "keep", Err: fmt.Errorf("%d is out of range: keep 1 to %d complete backups", c.Keep, MaxKeep)}
	}
	return nil
}

// FieldError is an invalid setting of Config; Field is its flag's name.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + " " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Calendar parses OnCalendar and TimeZone: the event must be valid for
// systemd and carry no zone of its own, and the zone must be an IANA name.
func (c Config) Calendar() (*Calendar, *time.Location, error) {
	cal, err := ParseCalendar(c.OnCalendar)
	if err != nil {
		return nil, nil, &FieldError{Field: "on-calendar", Err: fmt.Errorf("%q is not a systemd calendar event (systemd.time(7)): use the form [WEEKDAY] YEAR-MONTH-DAY HOUR:MINUTE[:SECOND], such as %q, or daily, weekly", c.OnCalendar, DefaultOnCalendar)}
	}
	if z := cal.Zone(); z != "" {
		return nil, nil, &FieldError{Field: "on-calendar", Err: fmt.Errorf("%q ends with the time zone %s: leave it out and pass it with --time-zone", c.OnCalendar, z)}
	}
	loc, err := LoadZone(c.TimeZone)
	if err != nil {
		return nil, nil, &FieldError{Field: "time-zone", Err: err}
	}
	return cal, loc, nil
}

// LoadZone loads an IANA time zone; "Local" and "" are refused, since the
// masters run in UTC whatever this machine's zone is.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" || !isZoneName(name) {
		return nil, fmt.Errorf("%q is not an IANA time zone: use a name such as UTC or Europe/Paris", name)
	}
	return time.LoadLocation(name)
}

// Elapses are the next n times the timer fires after now (fewer when it
// stops elapsing).
func (c Config) Elapses(now time.Time, n int) ([]time.Time, error) {
	cal, loc, err := c.Calendar()
	if err != nil {
		return nil, err
	}
	var out []time.Time
	for at := now; len(out) < n; {
		next, ok := cal.Next(at, loc)
		if !ok {
			break
		}
		out = append(out, next.In(loc))
		at = next
	}
	return out, nil
}

// timerCalendar is the OnCalendar= value: the normalized event and the zone.
func (c Config) timerCalendar() (string, error) {
	cal, _, err := c.Calendar()
	if err != nil {
		return "", err
	}
	return cal.String() + " " + c.TimeZone, nil
}

// environment is the script's settings, in the order the unit lists them.
func (c Config) environment() [][2]string {
	env := [][2]string{{EnvHost, c.Host}, {EnvTargetDir, c.TargetDir}, {EnvKeep, strconv.Itoa(c.Keep)}}
	if c.AllowTmpfs {
		env = append(env, [2]string{EnvAllowTmpfs, "true"})
	}
	return env
}

// environmentLine is one Environment= line of a unit, quoted. Only plain
// values are allowed (letters, digits, . _ / -): no quote, backslash, space
// or % to escape, so what the script reads is what was validated.
func environmentLine(name, value string) (string, error) {
	if value == "" {
		return "", fmt.Errorf("%s is empty", name)
	}
	for _, r := range value {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._/-", r)) {
			return "", fmt.Errorf("%s=%q holds %q, which a unit would need to escape: this is a bug, the value should have been refused", name, value, r)
		}
	}
	return fmt.Sprintf("Environment=\"%s=%s\"\n", name, value), nil
}

// ServiceUnit is the contents of ServiceName: one run of the script. It has
// no [Install]: only the timer starts it.
func (c Config) ServiceUnit() (string, error) {
	var b strings.Builder
	b.WriteString(`[Unit]
Description=hcpsnap: etcd backup with cluster-backup.sh (on the one master named in HOST; the others exit at once)
Documentation=https://github.com/hcpsnap/hcpsnap
# cluster-backup.sh pulls the etcd image when it needs etcdctl and talks to
# the local etcd member, which the kubelet runs.
Wants=network-online.target
After=network-online.target kubelet.service

[Service]
Type=oneshot
`)
	for _, kv := range c.environment() {
		line, err := environmentLine(kv[0], kv[1])
		if err != nil {
			return "", err
		}
		b.WriteString(line)
	}
	fmt.Fprintf(&b, `ExecStart=%s
# A hung run must not block the next ones: the timer does not start a
# service that is still running.
TimeoutStartSec=1h
# Below etcd, which shares the disk.
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
`, ScriptPath)
	return b.String(), nil
}

// TimerUnit is the contents of TimerName: the calendar with its time zone,
// catching up a run missed while the node was down, and an [Install]
// section, without which enabling it links nothing and it never fires.
func (c Config) TimerUnit() (string, error) {
	cal, err := c.timerCalendar()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`[Unit]
Description=hcpsnap: etcd backups on a schedule (%s)
Documentation=https://github.com/hcpsnap/hcpsnap

[Timer]
OnCalendar=%s
Persistent=true
Unit=%s

[Install]
WantedBy=timers.target
`, cal, cal, ServiceName), nil
}

// Ignition is the MachineConfig's spec.config: the script and the two
// units, as an Ignition 3.2.0 config that Ignition's own parser accepts
// without a warning.
func (c Config) Ignition() (igntypes.Config, error) { return c.ignition(Script()) }

func (c Config) ignition(script []byte) (igntypes.Config, error) {
	if err := c.Validate(); err != nil {
		return igntypes.Config{}, err
	}
	if bytes.Contains(script, []byte(etcdOperatorHeader)) {
		return igntypes.Config{}, fmt.Errorf("the snapshot script holds %q, and the etcd operator deletes the files that do: this is a bug", etcdOperatorHeader)
	}
	service, err := c.ServiceUnit()
	if err != nil {
		return igntypes.Config{}, err
	}
	timer, err := c.TimerUnit()
	if err != nil {
		return igntypes.Config{}, err
	}
	source := "data:;base64," + base64.StdEncoding.EncodeToString(script)
	mode := 0o755
	yes := true
	cfg := igntypes.Config{
		Ignition: igntypes.Ignition{Version: IgnitionVersion},
		Storage: igntypes.Storage{Files: []igntypes.File{{
			Node:          igntypes.Node{Path: ScriptPath, Overwrite: &yes},
			FileEmbedded1: igntypes.FileEmbedded1{Mode: &mode, Contents: igntypes.Resource{Source: &source}},
		}}},
		Systemd: igntypes.Systemd{Units: []igntypes.Unit{
			{Name: ServiceName, Contents: &service},
			{Name: TimerName, Contents: &timer, Enabled: &yes},
		}},
	}
	return cfg, nil
}

// ignitionJSON is the config as it goes into the MachineConfig: the JSON of
// cfg without the empty objects that Go's encoder writes for every unset
// struct, checked by Ignition's own parser without an error or a warning.
func ignitionJSON(cfg igntypes.Config) (map[string]any, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	dropEmpty(m)
	if raw, err = json.Marshal(m); err != nil {
		return nil, err
	}
	if _, rpt, err := ign.Parse(raw); err != nil || len(rpt.Entries) > 0 {
		return nil, fmt.Errorf("the rendered Ignition config does not validate against spec %s (%v): this is a bug: %s", IgnitionVersion, err, rpt.String())
	}
	return m, nil
}

// dropEmpty deletes the empty objects of m, innermost first.
func dropEmpty(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case map[string]any:
			dropEmpty(x)
			if len(x) == 0 {
				delete(m, k)
			}
		case []any:
			for _, e := range x {
				if em, ok := e.(map[string]any); ok {
					dropEmpty(em)
				}
			}
		}
	}
}

// MachineConfig renders the MachineConfig as the unstructured object that
// is printed and applied: only the fields hcpsnap sets (no empty
// osImageURL, fips or kernelType), so that a server-side apply owns nothing
// else.
func (c Config) MachineConfig() (*unstructured.Unstructured, error) {
	cfg, err := c.Ignition()
	if err != nil {
		return nil, err
	}
	config, err := ignitionJSON(cfg)
	if err != nil {
		return nil, err
	}
	cal, err := c.timerCalendar()
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": mcfgv1.GroupVersion.String(),
		"kind":       "MachineConfig",
		"metadata": map[string]any{
			"name":   c.Name,
			"labels": map[string]any{LabelRole: RoleMaster, LabelManagedBy: ManagedBy},
			"annotations": map[string]any{
				AnnotationHost:       c.Host,
				AnnotationOnCalendar: cal,
			},
		},
		"spec": map[string]any{"config": config},
	}}, nil
}
