package management

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

// fakeCluster holds MachineConfigs in a map, as an API server would: a
// server-side apply with dryRun validates and stores nothing, one without
// stores the body; a resourceVersion or UID precondition is checked. Every
// call is recorded, in order.
type fakeCluster struct {
	t       *testing.T
	objects map[string]*unstructured.Unstructured
	calls   []string
	// failDryRun, when set, is the error of every dry run.
	failDryRun error
	rv         int
}

var _ MachineConfigs = (*fakeCluster)(nil)

func newFakeCluster(t *testing.T, existing ...*unstructured.Unstructured) *fakeCluster {
	t.Helper()
	f := &fakeCluster{t: t, objects: map[string]*unstructured.Unstructured{}}
	for _, o := range existing {
		f.rv++
		o = o.DeepCopy()
		o.SetResourceVersion(itoa(f.rv))
		o.SetUID(types.UID("uid-" + o.GetName()))
		f.objects[o.GetName()] = o
	}
	return f
}

func notFound(name string) error {
	return apierrors.NewNotFound(MachineConfigGVR.GroupResource(), name)
}

func (f *fakeCluster) Get(_ context.Context, name string, _ metav1.GetOptions, _ ...string) (*unstructured.Unstructured, error) {
	f.calls = append(f.calls, "get "+name)
	if o, ok := f.objects[name]; ok {
		return o.DeepCopy(), nil
	}
	return nil, notFound(name)
}

func (f *fakeCluster) Patch(_ context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, _ ...string) (*unstructured.Unstructured, error) {
	t := f.t
	dry := slices.Equal(opts.DryRun, []string{metav1.DryRunAll})
	call := "apply " + name
	if dry {
		call += " dry-run"
	}
	if opts.Force != nil && *opts.Force {
		call += " force"
	}
	f.calls = append(f.calls, call)
	if opts.FieldManager != FieldManager {
		t.Errorf("apply as field manager %q", opts.FieldManager)
	}
	if pt != types.ApplyPatchType {
		t.Errorf("patch of type %s: only server-side apply is allowed", pt)
	}
	var body unstructured.Unstructured
	if err := json.Unmarshal(data, &body.Object); err != nil {
		t.Fatal(err)
	}
	cur, exists := f.objects[name]
	if rv := body.GetResourceVersion(); rv != "" && (!exists || rv != cur.GetResourceVersion()) {
		return nil, apierrors.NewConflict(MachineConfigGVR.GroupResource(), name, errors.New("resourceVersion"))
	}
	if dry {
		if f.failDryRun != nil {
			return nil, f.failDryRun
		}
		return &body, nil
	}
	body.SetResourceVersion("")
	if exists {
		prev := cur.DeepCopy()
		prev.SetResourceVersion("")
		prev.SetUID("")
		if equalJSON(t, prev.Object, body.Object) {
			return cur.DeepCopy(), nil
		}
		body.SetUID(cur.GetUID())
	} else {
		body.SetUID(types.UID("uid-" + name))
	}
	f.rv++
	body.SetResourceVersion(itoa(f.rv))
	f.objects[name] = body.DeepCopy()
	return &body, nil
}

func (f *fakeCluster) Delete(_ context.Context, name string, opts metav1.DeleteOptions, _ ...string) error {
	call := "delete " + name
	if opts.Preconditions != nil && opts.Preconditions.UID != nil {
		call += " uid=" + string(*opts.Preconditions.UID)
	}
	if slices.Equal(opts.DryRun, []string{metav1.DryRunAll}) {
		call += " dry-run"
	}
	f.calls = append(f.calls, call)
	cur, ok := f.objects[name]
	if !ok {
		return notFound(name)
	}
	if opts.Preconditions != nil && opts.Preconditions.UID != nil && *opts.Preconditions.UID != cur.GetUID() {
		return apierrors.NewConflict(MachineConfigGVR.GroupResource(), name, errors.New("uid"))
	}
	if len(opts.DryRun) == 0 {
		delete(f.objects, name)
	}
	return nil
}

func equalJSON(t *testing.T, a, b any) bool {
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

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func renderTest(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	mc, err := testConfig().MachineConfig()
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

func stranger(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
		"metadata": map[string]any{"name": name, "labels": map[string]any{LabelRole: RoleMaster}},
		"spec":     map[string]any{},
	}}
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	mc := renderTest(t)
	f := newFakeCluster(t)
	out, err := Apply(ctx, f, mc, false)
	if err != nil || out != Created {
		t.Fatalf("Apply = %s, %v; want created", out, err)
	}
	want := []string{"get " + DefaultName, "apply " + DefaultName + " dry-run", "apply " + DefaultName}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	if got := f.objects[DefaultName]; got == nil || !Owned(got.GetLabels()) {
		t.Fatalf("stored %v", got)
	}

	// Again, unchanged: force on our own object, with its resourceVersion.
	f.calls = nil
	out, err = Apply(ctx, f, mc, false)
	if err != nil || out != Unchanged {
		t.Fatalf("second Apply = %s, %v; want unchanged", out, err)
	}
	want = []string{"get " + DefaultName, "apply " + DefaultName + " dry-run force", "apply " + DefaultName + " force"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}

	// A new calendar: configured.
	c := testConfig()
	c.OnCalendar = "weekly"
	mc2, err := c.MachineConfig()
	if err != nil {
		t.Fatal(err)
	}
	if out, err = Apply(ctx, f, mc2, false); err != nil || out != Configured {
		t.Fatalf("Apply of a new calendar = %s, %v; want configured", out, err)
	}
}

func TestApplyDryRunPersistsNothing(t *testing.T) {
	f := newFakeCluster(t)
	out, err := Apply(context.Background(), f, renderTest(t), true)
	if err != nil || out != Validated {
		t.Fatalf("Apply = %s, %v", out, err)
	}
	if want := []string{"get " + DefaultName, "apply " + DefaultName + " dry-run"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	if len(f.objects) != 0 {
		t.Errorf("a dry run stored %v", f.objects)
	}
}

func TestApplyStopsAtAFailedDryRun(t *testing.T) {
	f := newFakeCluster(t)
	f.failDryRun = apierrors.NewInvalid(schema.GroupKind{Group: MachineConfigGVR.Group, Kind: "MachineConfig"}, DefaultName, nil)
	if _, err := Apply(context.Background(), f, renderTest(t), false); err == nil {
		t.Fatal("Apply went on after a failed dry run")
	}
	if want := []string{"get " + DefaultName, "apply " + DefaultName + " dry-run"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
}

func TestApplyRefusesAStranger(t *testing.T) {
	f := newFakeCluster(t, stranger(DefaultName))
	_, err := Apply(context.Background(), f, renderTest(t), false)
	if !errors.Is(err, ErrNotOwned) {
		t.Fatalf("Apply = %v, want ErrNotOwned", err)
	}
	if want := []string{"get " + DefaultName}; !slices.Equal(f.calls, want) {
		t.Errorf("calls %q, want %q: nothing written", f.calls, want)
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	f := newFakeCluster(t, renderTest(t), stranger("99-master-theirs"))
	if err := Delete(ctx, f, "99-master-theirs", false); !errors.Is(err, ErrNotOwned) {
		t.Errorf("Delete of a stranger = %v, want ErrNotOwned", err)
	}
	if err := Delete(ctx, f, "99-master-nothing", false); !errors.Is(err, ErrNoMachineConfig) {
		t.Errorf("Delete of a missing one = %v, want ErrNoMachineConfig", err)
	}
	if err := Delete(ctx, f, DefaultName, true); err != nil || f.objects[DefaultName] == nil {
		t.Fatalf("dry-run Delete = %v, object left %t", err, f.objects[DefaultName] != nil)
	}
	if err := Delete(ctx, f, DefaultName, false); err != nil {
		t.Fatal(err)
	}
	want := []string{"get 99-master-theirs", "get 99-master-nothing",
		"get " + DefaultName, "delete " + DefaultName + " uid=uid-" + DefaultName + " dry-run",
		"get " + DefaultName, "delete " + DefaultName + " uid=uid-" + DefaultName}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	if f.objects[DefaultName] != nil || f.objects["99-master-theirs"] == nil {
		t.Errorf("left %v", f.objects)
	}
}

func TestCheckHost(t *testing.T) {
	node := func(name string, labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	kube := kubefake.NewClientset(
		node("master-0", map[string]string{LabelNodeMaster: ""}),
		node("cp-0", map[string]string{LabelNodeControlPlane: ""}),
		node("worker-0", map[string]string{"node-role.kubernetes.io/worker": ""}),
	)
	for host, want := range map[string]error{"master-0": nil, "cp-0": nil, "worker-0": ErrNotMaster, "nowhere": ErrNoNode} {
		if err := CheckHost(context.Background(), kube, host); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("CheckHost(%s) = %v, want %v", host, err, want)
		}
	}
}
