//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/hcpsnap/hcpsnap/e2e/localenv"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/management"
)

// machineConfigs is the local apiserver's MachineConfigs (the CRD of
// openshift/api that `make deps` extracts and localenv applies).
func (e *testEnv) machineConfigs(t *testing.T) dynamic.ResourceInterface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(e.restConfig)
	if err != nil {
		t.Fatal(err)
	}
	return dyn.Resource(management.MachineConfigGVR)
}

// managementArgs are the arguments of `schedule management` for the local
// node agent's node, a master.
func managementArgs(name string, extra ...string) []string {
	return append([]string{"schedule", "management", "--host", localenv.NodeName, "--name", name,
		"--on-calendar", "Mon..Fri *-*-* 01:30", "--time-zone", "Europe/Paris"}, extra...)
}

func TestScheduleManagement(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	mcs := env.machineConfigs(t)
	const name = "99-master-hcpsnap-e2e"
	t.Cleanup(func() { _ = mcs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	state := t.TempDir()
	absent := func(t *testing.T, name string) {
		t.Helper()
		if _, err := mcs.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("MachineConfig %s: %v, want none", name, err)
		}
	}

	// What a render prints is what --apply writes.
	r := env.hcpsnap(t, state, managementArgs(name)...)
	if r.code != 0 {
		t.Fatalf("render: exit %d: %s", r.code, r.stderr)
	}
	var rendered unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(r.stdout), &rendered.Object); err != nil {
		t.Fatal(err)
	}

	t.Run("server-side dry run persists nothing", func(t *testing.T) {
		r := env.hcpsnap(t, state, managementArgs(name, "--dry-run=server")...)
		if r.code != 0 || !strings.Contains(r.stdout, "validated by the API server") {
			t.Fatalf("exit %d: %s\n%s", r.code, r.stdout, r.stderr)
		}
		absent(t, name)
	})

	t.Run("apply creates it", func(t *testing.T) {
		r := env.hcpsnap(t, state, managementArgs(name, "--apply")...)
		if r.code != 0 || !strings.Contains(r.stdout, "MachineConfig/"+name+" created") || !strings.Contains(r.stdout, "drains and reboots the masters one at a time") {
			t.Fatalf("exit %d: %s\n%s", r.code, r.stdout, r.stderr)
		}
		got, err := mcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !management.Owned(got.GetLabels()) || got.GetLabels()[management.LabelRole] != management.RoleMaster {
			t.Errorf("labels %v", got.GetLabels())
		}
		if !jsonEqual(t, got.Object["spec"], rendered.Object["spec"]) {
			t.Errorf("spec on the server differs from the render:\n%v\n%v", got.Object["spec"], rendered.Object["spec"])
		}
		version, _, _ := unstructured.NestedString(got.Object, "spec", "config", "ignition", "version")
		if version != management.IgnitionVersion {
			t.Errorf("ignition version %q", version)
		}
		applied := false
		for _, mf := range got.GetManagedFields() {
			if mf.Manager == management.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
				applied = true
			}
		}
		if !applied {
			t.Errorf("no server-side apply by %s in managedFields %v", management.FieldManager, got.GetManagedFields())
		}
	})

	t.Run("apply again converges", func(t *testing.T) {
		before, err := mcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r := env.hcpsnap(t, state, managementArgs(name, "--apply")...)
		if r.code != 0 || !strings.Contains(r.stdout, "unchanged") {
			t.Fatalf("exit %d: %s\n%s", r.code, r.stdout, r.stderr)
		}
		after, err := mcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if after.GetResourceVersion() != before.GetResourceVersion() {
			t.Errorf("resourceVersion %s -> %s: a second apply changed it", before.GetResourceVersion(), after.GetResourceVersion())
		}
		r = env.hcpsnap(t, state, managementArgs(name, "--apply", "--keep", "3")...)
		if r.code != 0 || !strings.Contains(r.stdout, "configured") {
			t.Fatalf("--keep 3: exit %d: %s\n%s", r.code, r.stdout, r.stderr)
		}
		after, err = mcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if raw, _ := json.Marshal(after.Object["spec"]); !strings.Contains(string(raw), `Environment=\"KEEP=3\"`) {
			t.Errorf("the service does not keep 3: %s", raw)
		}
	})

	t.Run("someone else's MachineConfig is refused", func(t *testing.T) {
		const theirs = "99-master-hcpsnap-e2e-theirs"
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
			"metadata": map[string]any{"name": theirs, "labels": map[string]any{management.LabelRole: management.RoleMaster}},
			"spec":     map[string]any{"config": map[string]any{"ignition": map[string]any{"version": "3.2.0"}}},
		}}
		created, err := mcs.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mcs.Delete(context.Background(), theirs, metav1.DeleteOptions{}) })
		for _, args := range [][]string{managementArgs(theirs, "--apply"), managementArgs(theirs, "--dry-run=server"), {"schedule", "management", "--delete", "--name", theirs}} {
			r := env.hcpsnap(t, state, args...)
			if r.code != int(exitcode.Precondition) || !strings.Contains(r.stderr, "not managed by hcpsnap") {
				t.Errorf("%v: exit %d, want 3: %s", args, r.code, r.stderr)
			}
		}
		now, err := mcs.Get(ctx, theirs, metav1.GetOptions{})
		if err != nil || now.GetResourceVersion() != created.GetResourceVersion() {
			t.Errorf("their MachineConfig was changed: %v, resourceVersion %s -> %s", err, created.GetResourceVersion(), now.GetResourceVersion())
		}
	})

	t.Run("host must be a master", func(t *testing.T) {
		const worker = "hcpsnap-e2e-worker"
		if _, err := env.kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: worker,
			Labels: map[string]string{"node-role.kubernetes.io/worker": ""}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.kube.CoreV1().Nodes().Delete(context.Background(), worker, metav1.DeleteOptions{}) })
		const other = "99-master-hcpsnap-e2e-host"
		for host, want := range map[string]string{worker: "is not a master", "hcpsnap-e2e-nowhere": "no such node"} {
			for _, mode := range []string{"--apply", "--dry-run=server"} {
				r := env.hcpsnap(t, state, "schedule", "management", "--host", host, "--name", other, mode)
				if r.code != int(exitcode.Precondition) || !strings.Contains(r.stderr, want) {
					t.Errorf("--host %s %s: exit %d, want 3 and %q: %s", host, mode, r.code, want, r.stderr)
				}
			}
		}
		absent(t, other)
	})

	t.Run("delete removes it", func(t *testing.T) {
		r := env.hcpsnap(t, state, "schedule", "management", "--delete", "--name", name, "--dry-run=server")
		if r.code != 0 {
			t.Fatalf("dry-run delete: exit %d: %s", r.code, r.stderr)
		}
		if _, err := mcs.Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatalf("a dry-run delete removed it: %v", err)
		}
		r = env.hcpsnap(t, state, "schedule", "management", "--delete", "--name", name)
		if r.code != 0 || !strings.Contains(r.stdout, "deleted") {
			t.Fatalf("exit %d: %s\n%s", r.code, r.stdout, r.stderr)
		}
		absent(t, name)
		r = env.hcpsnap(t, state, "schedule", "management", "--delete", "--name", name)
		if r.code != int(exitcode.Precondition) || !strings.Contains(r.stderr, "no such MachineConfig") {
			t.Errorf("second delete: exit %d: %s", r.code, r.stderr)
		}
	})
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}
