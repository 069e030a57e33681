package command

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/management"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// The MachineConfig carries the same ownership label as schedule's objects.
func TestManagementOwnershipLabelIsSchedules(t *testing.T) {
	if management.LabelManagedBy != schedule.LabelManagedBy || management.ManagedBy != schedule.ManagedBy || management.FieldManager != schedule.FieldManager {
		t.Errorf("management's %s=%s (manager %s) differs from schedule's %s=%s (manager %s)",
			management.LabelManagedBy, management.ManagedBy, management.FieldManager, schedule.LabelManagedBy, schedule.ManagedBy, schedule.FieldManager)
	}
}

func TestScheduleManagementRender(t *testing.T) {
	clearHCPSNAPEnv(t)
	stdout, stderr, code := run(t, nil, "schedule", "management", "--host", "master-0", "--on-calendar", "Mon..Fri 1:30", "--time-zone", "Europe/Paris", "--keep", "3")
	if code != exitcode.OK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "not checked") {
		t.Errorf("stderr does not say that --host was not checked:\n%s", stderr)
	}
	var mc unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(stdout), &mc.Object); err != nil {
		t.Fatalf("stdout is not one YAML object: %v\n%s", err, stdout)
	}
	if mc.GetKind() != "MachineConfig" || mc.GetName() != management.DefaultName || mc.GetLabels()[management.LabelRole] != "master" {
		t.Errorf("rendered %s %s %v", mc.GetKind(), mc.GetName(), mc.GetLabels())
	}
	units, _, _ := unstructured.NestedSlice(mc.Object, "spec", "config", "systemd", "units")
	var timer string
	for _, u := range units {
		if m := u.(map[string]any); m["name"] == management.TimerName {
			timer, _ = m["contents"].(string)
		}
	}
	if !strings.Contains(timer, "\nOnCalendar=Mon..Fri *-*-* 01:30:00 Europe/Paris\n") {
		t.Errorf("timer:\n%s", timer)
	}
	files, _, _ := unstructured.NestedSlice(mc.Object, "spec", "config", "storage", "files")
	src, _, _ := unstructured.NestedString(files[0].(map[string]any), "contents", "source")
	script, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(src, "data:;base64,"))
	if err != nil || !bytes.Equal(script, management.Script()) {
		t.Errorf("the script in the file is not management.Script() (%v)", err)
	}

	// -o json: the same object, one line.
	clearHCPSNAPEnv(t)
	stdout, _, code = run(t, nil, "-o", "json", "schedule", "management", "--host", "master-0", "--on-calendar", "Mon..Fri 1:30", "--time-zone", "Europe/Paris", "--keep", "3")
	var fromJSON map[string]any
	if code != exitcode.OK || strings.Count(stdout, "\n") != 1 || json.Unmarshal([]byte(stdout), &fromJSON) != nil {
		t.Fatalf("-o json: exit %d, %q", code, stdout)
	}
	a, _ := json.Marshal(fromJSON)
	b, _ := json.Marshal(mc.Object)
	if !bytes.Equal(a, b) {
		t.Error("-o json and YAML render different objects")
	}
}

func TestScheduleManagementEnv(t *testing.T) {
	clearHCPSNAPEnv(t)
	stdout, stderr, code := run(t, map[string]string{"HCPSNAP_MANAGEMENT_HOST": "master-1", "HCPSNAP_MANAGEMENT_KEEP": "2"}, "schedule", "management")
	if code != exitcode.OK || !strings.Contains(stdout, `Environment="HOST=master-1"`) || !strings.Contains(stdout, `Environment="KEEP=2"`) {
		t.Fatalf("exit %d: %s\n%s", code, stderr, stdout)
	}
}

// TestScheduleManagementBadInput: each invalid flag is one line that names
// it, exit code 2, and nothing on stdout.
func TestScheduleManagementBadInput(t *testing.T) {
	host := []string{"--host", "master-0"}
	tests := []struct {
		name string
		args []string
		flag string
	}{
		{"no host", nil, "--host"},
		{"host not a node name", []string{"--host", "Master_0"}, "--host"},
		{"host with a quote", []string{"--host", `m"0`}, "--host"},
		{"cron syntax", append([]string{"--on-calendar", "0 2 * * *"}, host...), "--on-calendar"},
		{"zone in the calendar", append([]string{"--on-calendar", "daily Europe/Paris"}, host...), "--on-calendar"},
		{"past moment", append([]string{"--on-calendar", "2020-01-01"}, host...), "--on-calendar"},
		{"impossible date", append([]string{"--on-calendar", "*-02-30"}, host...), "--on-calendar"},
		{"empty calendar", append([]string{"--on-calendar", ""}, host...), "--on-calendar"},
		{"unknown zone", append([]string{"--time-zone", "Mars/Olympus"}, host...), "--time-zone"},
		{"Local", append([]string{"--time-zone", "Local"}, host...), "--time-zone"},
		{"etcd's folder", append([]string{"--target-dir", "/var/lib/etcd/snap"}, host...), "--target-dir"},
		{"tmp without allow-tmpfs", append([]string{"--target-dir", "/tmp/snap"}, host...), "--target-dir"},
		{"relative folder", append([]string{"--target-dir", "snap"}, host...), "--target-dir"},
		{"outside the allowed places", append([]string{"--target-dir", "/etc/snap"}, host...), "--target-dir"},
		{"keep 0", append([]string{"--keep", "0"}, host...), "--keep"},
		{"keep too many", append([]string{"--keep", "101"}, host...), "--keep"},
		{"keep not a number", append([]string{"--keep", "seven"}, host...), "keep"},
		{"bad name", append([]string{"--name", "Bad_Name"}, host...), "--name"},
		{"bad name for delete", []string{"--delete", "--name", "Bad_Name"}, "--name"},
		{"dry-run mode", append([]string{"--dry-run", "maybe"}, host...), "--dry-run"},
		{"apply and delete", append([]string{"--apply", "--delete"}, host...), "--delete"},
		{"apply and client dry run", append([]string{"--apply", "--dry-run", "client"}, host...), "--apply"},
		{"delete and client dry run", []string{"--delete", "--dry-run", "client"}, "--delete"},
		{"an argument", append([]string{"extra"}, host...), "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearHCPSNAPEnv(t)
			// KUBECONFIG points nowhere: nothing may be read or applied.
			t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
			stdout, err := runErr(t, append([]string{"schedule", "management"}, tt.args...)...)
			if code := exitcode.Of(err); code != exitcode.Usage {
				t.Fatalf("exit %d (%v), want %d", code, err, exitcode.Usage)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, tt.flag) {
				t.Errorf("error %q is not one line naming %s", msg, tt.flag)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing rendered", stdout)
			}
		})
	}
	clearHCPSNAPEnv(t)
	if _, err := runErr(t, "-o", "markdown", "schedule", "management", "--host", "master-0"); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("-o markdown: %v", err)
	}
	// /tmp with --allow-tmpfs renders, with the warning on stderr.
	stdout, stderr, code := run(t, nil, "schedule", "management", "--host", "master-0", "--target-dir", "/tmp/snap", "--allow-tmpfs")
	if code != exitcode.OK || !strings.Contains(stdout, `Environment="ALLOW_TMPFS=true"`) || !strings.Contains(stderr, "tmpfs") {
		t.Errorf("--allow-tmpfs: exit %d, stderr %s", code, stderr)
	}
}

// managementCluster is a fake cluster with MachineConfigs served, master-0
// (a master), worker-0 and, optionally, existing MachineConfigs.
func managementCluster(t *testing.T, served bool, existing ...runtime.Object) (*fake.Clientset, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	kube := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "master-0", Labels: map[string]string{management.LabelNodeControlPlane: ""}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-0", Labels: map[string]string{"node-role.kubernetes.io/worker": ""}}},
	)
	if served {
		kube.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
			GroupVersion: management.MachineConfigGVR.GroupVersion().String(),
			APIResources: []metav1.APIResource{{Name: "machineconfigs", Kind: "MachineConfig"}},
		}}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{management.MachineConfigGVR: "MachineConfigList"}, existing...)
	return kube, dyn
}

func runManagement(t *testing.T, kube *fake.Clientset, dyn *dynamicfake.FakeDynamicClient, edit func(*ScheduleManagementOptions)) (string, error) {
	t.Helper()
	var out bytes.Buffer
	o := &ScheduleManagementOptions{
		Host: "master-0", OnCalendar: management.DefaultOnCalendar, TimeZone: "UTC", TargetDir: management.DefaultTargetDir,
		Keep: management.DefaultKeep, Name: management.DefaultName, Apply: true,
		Global: &GlobalOptions{Output: OutputText}, Out: &out,
		now:  func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) },
		kube: kube, disc: kube.Discovery(), mcs: dyn.Resource(management.MachineConfigGVR),
	}
	edit(o)
	ctx := context.Background()
	if err := o.Validate(); err != nil {
		return out.String(), err
	}
	if err := o.Complete(ctx); err != nil {
		return out.String(), err
	}
	err := o.Run(ctx)
	return out.String(), err
}

func TestScheduleManagementApplyChecks(t *testing.T) {
	theirs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
		"metadata": map[string]any{"name": management.DefaultName, "labels": map[string]any{management.LabelRole: "master"}},
	}}
	tests := []struct {
		name     string
		served   bool
		existing []runtime.Object
		edit     func(*ScheduleManagementOptions)
		want     string
	}{
		{"not OpenShift", false, nil, func(*ScheduleManagementOptions) {}, "does not serve MachineConfigs"},
		{"missing node", true, nil, func(o *ScheduleManagementOptions) { o.Host = "master-9" }, "--host master-9: no such node"},
		{"worker", true, nil, func(o *ScheduleManagementOptions) { o.Host = "worker-0" }, "--host worker-0 is not a master"},
		{"someone else's MachineConfig", true, []runtime.Object{theirs}, func(*ScheduleManagementOptions) {}, "not managed by hcpsnap"},
		{"someone else's MachineConfig, dry run", true, []runtime.Object{theirs}, func(o *ScheduleManagementOptions) { o.Apply, o.DryRun = false, dryRunServer }, "not managed by hcpsnap"},
		{"delete someone else's", true, []runtime.Object{theirs}, func(o *ScheduleManagementOptions) { o.Apply, o.Delete = false, true }, "not managed by hcpsnap"},
		{"delete a missing one", true, nil, func(o *ScheduleManagementOptions) { o.Apply, o.Delete = false, true }, "no such MachineConfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube, dyn := managementCluster(t, tt.served, tt.existing...)
			out, err := runManagement(t, kube, dyn, tt.edit)
			if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("exit %d, error %v; want one line with %q, exit 3", exitcode.Of(err), err, tt.want)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
			for _, a := range dyn.Actions() {
				if a.GetVerb() != "get" {
					t.Errorf("%s %s before the checks passed", a.GetVerb(), a.GetResource().Resource)
				}
			}
		})
	}
}

func TestScheduleManagementApplySays(t *testing.T) {
	kube, dyn := managementCluster(t, true)
	// The fake's tracker cannot apply; the API server's answer to a dry
	// run is the object sent.
	dyn.PrependReactor("patch", "machineconfigs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		var u unstructured.Unstructured
		err := json.Unmarshal(a.(k8stesting.PatchAction).GetPatch(), &u.Object)
		return true, &u, err
	})
	out, err := runManagement(t, kube, dyn, func(o *ScheduleManagementOptions) { o.Apply, o.DryRun = false, dryRunServer })
	if err != nil || !strings.Contains(out, "validated by the API server") || !strings.Contains(out, "drain and reboot the masters one at a time") ||
		!strings.Contains(out, "Next runs: 2026-12-03T02:00:00Z, 2026-12-04T02:00:00Z, 2026-12-05T02:00:00Z.") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	var patches []bool
	for _, a := range dyn.Actions() {
		if a.GetVerb() == "patch" {
			patches = append(patches, true)
		}
	}
	if len(patches) != 1 {
		t.Errorf("a server-side dry run sent %d patches, want 1 (the dry run)", len(patches))
	}
}
