package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// futureSpec is a part of the HostedCluster's spec that the vendored API
// does not know, as a newer HyperShift would have it: it must survive every
// write hcpsnap makes.
var futureSpec = map[string]any{
	"hcpsnapTestFutureField": map[string]any{"mode": "Strict", "replicas": int64(3), "zones": []any{"a", "b"}},
}

// dynamicCluster serves the fixture's HostedCluster and HostedControlPlane
// through client-go's fake dynamic client, which is what kube.HyperShift
// talks to in production. The HostedCluster carries fields the vendored Go
// type lacks. A patch reactor plays the apiserver: it applies merge patches
// to the stored JSON, refuses a patch whose metadata.resourceVersion is not
// the current one, bumps the resourceVersion, and mirrors spec.pausedUntil
// into the HostedControlPlane as the HyperShift operator would.
type dynamicCluster struct {
	client *dynamicfake.FakeDynamicClient
	hs     *kube.HyperShift

	mu      sync.Mutex
	rv      int
	patches []string
	// beforePatch, when set, runs before a patch is applied, e.g. to let
	// another writer change the object in between.
	beforePatch func(patch string)
}

func newDynamicCluster(t *testing.T, fx *fixture) *dynamicCluster {
	t.Helper()
	hcObj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(fx.hs.current())
	if err != nil {
		t.Fatal(err)
	}
	hc := &unstructured.Unstructured{Object: hcObj}
	hc.SetAPIVersion(kube.HostedClusterGVR.GroupVersion().String())
	hc.SetKind("HostedCluster")
	hc.SetResourceVersion("1")
	hc.SetAnnotations(map[string]string{"keep": "me"})
	for k, v := range futureSpec {
		if err := unstructured.SetNestedField(hc.Object, runtime.DeepCopyJSONValue(v), "spec", k); err != nil {
			t.Fatal(err)
		}
	}
	if err := unstructured.SetNestedField(hc.Object, "future", "status", "hcpsnapTestFutureStatus"); err != nil {
		t.Fatal(err)
	}
	hcpObj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(fx.hs.hcp)
	if err != nil {
		t.Fatal(err)
	}
	hcp := &unstructured.Unstructured{Object: hcpObj}
	hcp.SetAPIVersion(kube.HostedControlPlaneGVR.GroupVersion().String())
	hcp.SetKind("HostedControlPlane")

	d := &dynamicCluster{rv: 1}
	d.client = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		kube.HostedClusterGVR:      "HostedClusterList",
		kube.HostedControlPlaneGVR: "HostedControlPlaneList",
	}, hc, hcp)
	d.client.PrependReactor("patch", "hostedclusters", d.patch)
	d.hs = &kube.HyperShift{Dynamic: d.client}
	return d
}

func (d *dynamicCluster) patch(a k8stesting.Action) (bool, runtime.Object, error) {
	pa := a.(k8stesting.PatchAction)
	body := string(pa.GetPatch())
	if d.beforePatch != nil {
		d.beforePatch(body)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.patches = append(d.patches, body)
	if pa.GetPatchType() != "application/merge-patch+json" {
		return true, nil, apierrors.NewBadRequest("unexpected patch type " + string(pa.GetPatchType()))
	}
	tracker := d.client.Tracker()
	obj, err := tracker.Get(kube.HostedClusterGVR, pa.GetNamespace(), pa.GetName())
	if err != nil {
		return true, nil, err
	}
	cur := obj.(*unstructured.Unstructured)
	var pre struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(pa.GetPatch(), &pre); err != nil {
		return true, nil, apierrors.NewBadRequest(err.Error())
	}
	if v := pre.Metadata.ResourceVersion; v != "" && v != cur.GetResourceVersion() {
		return true, nil, apierrors.NewConflict(hcGR, pa.GetName(), errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	next, err := d.apply(cur, pa.GetPatch())
	if err != nil {
		return true, nil, err
	}
	if err := tracker.Update(kube.HostedClusterGVR, next, pa.GetNamespace()); err != nil {
		return true, nil, err
	}
	// The operator copies pausedUntil into the HostedControlPlane.
	hcpObj, err := tracker.Get(kube.HostedControlPlaneGVR, testHCPNS, pa.GetName())
	if err != nil {
		return true, nil, err
	}
	hcp := hcpObj.(*unstructured.Unstructured).DeepCopy()
	if v, ok, _ := unstructured.NestedString(next.Object, "spec", "pausedUntil"); ok {
		_ = unstructured.SetNestedField(hcp.Object, v, "spec", "pausedUntil")
	} else {
		unstructured.RemoveNestedField(hcp.Object, "spec", "pausedUntil")
	}
	if err := tracker.Update(kube.HostedControlPlaneGVR, hcp, testHCPNS); err != nil {
		return true, nil, err
	}
	return true, next, nil
}

// apply merge-patches cur (RFC 7386) into a new version.
func (d *dynamicCluster) apply(cur *unstructured.Unstructured, patch []byte) (*unstructured.Unstructured, error) {
	doc, err := json.Marshal(cur.Object)
	if err != nil {
		return nil, err
	}
	var target, p any
	if err := json.Unmarshal(doc, &target); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	merged, err := json.Marshal(mergePatch(target, p))
	if err != nil {
		return nil, err
	}
	next := &unstructured.Unstructured{}
	if err := next.UnmarshalJSON(merged); err != nil {
		return nil, err
	}
	d.rv++
	next.SetResourceVersion(strconv.Itoa(d.rv))
	return next, nil
}

// object returns the stored HostedCluster as a GET returns it.
func (d *dynamicCluster) object(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	u, err := d.client.Resource(kube.HostedClusterGVR).Namespace(testNS).Get(context.Background(), testCluster, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// specJSON is the JSON of .spec from a GET.
func (d *dynamicCluster) specJSON(t *testing.T) string {
	t.Helper()
	data, err := json.Marshal(d.object(t).Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func (d *dynamicCluster) recorded() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.patches)
}

// checkOwnWrites fails unless every request to the dynamic client was a
// read or a merge patch, and every patch changes only the run annotation
// (conditioned on a resourceVersion) or spec.pausedUntil.
func (d *dynamicCluster) checkOwnWrites(t *testing.T) {
	t.Helper()
	for _, a := range d.client.Actions() {
		if v := a.GetVerb(); v != "get" && v != "patch" {
			t.Errorf("%s %s: hcpsnap may only read and patch", v, a.GetResource().Resource)
		}
	}
	for _, body := range d.recorded() {
		var p map[string]map[string]any
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Errorf("patch %s: %v", body, err)
			continue
		}
		for top, fields := range p {
			keys := slices.Sorted(maps.Keys(fields))
			switch {
			case top == "spec" && slices.Equal(keys, []string{"pausedUntil"}):
			case top == "metadata" && slices.Equal(keys, []string{"annotations", "resourceVersion"}):
				ann, _ := fields["annotations"].(map[string]any)
				if len(ann) != 1 || !slices.Contains(slices.Collect(maps.Keys(ann)), RunAnnotation) {
					t.Errorf("patch %s touches annotations other than %s", body, RunAnnotation)
				}
			default:
				t.Errorf("patch %s writes %s %v, which hcpsnap does not own", body, top, keys)
			}
		}
		if len(p) != 1 {
			t.Errorf("patch %s writes %d parts, want one of spec.pausedUntil or the run annotation", body, len(p))
		}
	}
}

// TestClusterSaverPatchesThroughDynamicClient takes, updates and releases
// the lock through kube.HyperShift on a fake dynamic client: each write is a
// merge patch of the run annotation alone, conditioned on the
// resourceVersion, and the fields the vendored API lacks survive.
func TestClusterSaverPatchesThroughDynamicClient(t *testing.T) {
	fx := newFixture(t, nil)
	d := newDynamicCluster(t, fx)
	before := d.object(t)
	specBefore := d.specJSON(t)
	run := newRun("this-host")
	run.Step(StepPreflight).Status = checkpoint.Done
	saver := &ClusterSaver{Dir: t.TempDir(), Client: d.hs}
	ctx := quietContext()

	first := annotationOf(t, run)
	if err := saver.Save(ctx, run); err != nil {
		t.Fatal(err)
	}
	run.Serial++
	second := annotationOf(t, run)
	if err := saver.Save(ctx, run); err != nil {
		t.Fatal(err)
	}
	if held := d.object(t).GetAnnotations()[RunAnnotation]; held != second {
		t.Errorf("annotation while held %q, want the run %q", held, second)
	}
	if err := saver.Release(ctx, run); err != nil {
		t.Fatal(err)
	}

	ann := `{"metadata":{"annotations":{"` + RunAnnotation + `":%s},"resourceVersion":"%d"}}`
	want := []string{
		fmt.Sprintf(ann, strconvQuote(t, first), 1),
		fmt.Sprintf(ann, strconvQuote(t, second), 2),
		fmt.Sprintf(ann, "null", 3),
	}
	if got := d.recorded(); !slices.Equal(got, want) {
		t.Errorf("patches\n got %q\nwant %q", got, want)
	}
	d.checkOwnWrites(t)
	if s := d.specJSON(t); s != specBefore {
		t.Errorf("spec changed:\n got %s\nwant %s", s, specBefore)
	}
	after := d.object(t)
	if !maps.Equal(after.GetAnnotations(), before.GetAnnotations()) {
		t.Errorf("annotations %v, want %v", after.GetAnnotations(), before.GetAnnotations())
	}
	if v, _, _ := unstructured.NestedString(after.Object, "status", "hcpsnapTestFutureStatus"); v != "future" {
		t.Errorf("status field the vendored API lacks is %q, want it kept", v)
	}
}

// TestClusterSaverConflictRereads lets another run take the lock between
// the saver's read and its patch: the resourceVersion precondition turns
// the patch into a Conflict, the retry reads again, and the saver refuses
// without touching the other run's annotation.
func TestClusterSaverConflictRereads(t *testing.T) {
	fx := newFixture(t, nil)
	d := newDynamicCluster(t, fx)
	other := annotationOf(t, newRun("other-host"))
	d.beforePatch = func(string) {
		d.beforePatch = nil
		d.mu.Lock()
		defer d.mu.Unlock()
		obj, err := d.client.Tracker().Get(kube.HostedClusterGVR, testNS, testCluster)
		if err != nil {
			t.Error(err)
			return
		}
		u := obj.(*unstructured.Unstructured).DeepCopy()
		u.SetAnnotations(map[string]string{"keep": "me", RunAnnotation: other})
		d.rv++
		u.SetResourceVersion(strconv.Itoa(d.rv))
		if err := d.client.Tracker().Update(kube.HostedClusterGVR, u, testNS); err != nil {
			t.Error(err)
		}
	}
	run := newRun("this-host")
	run.Step(StepPreflight).Status = checkpoint.Done
	saver := &ClusterSaver{Dir: t.TempDir(), Client: d.hs}

	err := saver.Save(quietContext(), run)

	if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), "is held by hcpsnap run") {
		t.Fatalf("err %v, want the other run named with exit 3", err)
	}
	gets := 0
	for _, a := range d.client.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "hostedclusters" {
			gets++
		}
	}
	if got := d.object(t).GetAnnotations()[RunAnnotation]; got != other {
		t.Errorf("the other run's annotation became %q", got)
	}
	if p := d.recorded(); len(p) != 1 || !strings.Contains(p[0], `"resourceVersion":"1"`) || gets != 2 {
		t.Errorf("patches %q after %d reads, want the one refused at resourceVersion 1 and a re-read", p, gets)
	}
}

// TestBackupKeepsUnknownSpecFields runs whole backups through kube.HyperShift
// on a fake dynamic client whose HostedCluster has fields the vendored API
// lacks: after a backup, a failed backup and a resumed one, .spec is
// byte-identical and every write was a patch of what hcpsnap owns.
func TestBackupKeepsUnknownSpecFields(t *testing.T) {
	cases := []struct {
		name        string
		pausedUntil *string
		fail        string // the exec op that fails in the first run
		resume      bool
	}{
		{name: "backup"},
		{name: "backup, pausedUntil set", pausedUntil: ptr.To("true")},
		{name: "failed backup", fail: "snapshot-save"},
		{name: "failed upload, then resume", fail: "cat", resume: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, tc.pausedUntil)
			d := newDynamicCluster(t, fx)
			specBefore := d.specJSON(t)
			annBefore := d.object(t).GetAnnotations()
			dir := t.TempDir()
			if tc.fail != "" {
				fx.exec.fail[tc.fail] = errors.New("command terminated with exit code 1")
			}
			s := fx.state(defaultOptions())
			s.Clients.HyperShift = d.hs
			s.Saver = &ClusterSaver{Dir: dir, Client: d.hs}

			err := fx.execute(s)
			if tc.fail == "" && err != nil {
				t.Fatal(err)
			}
			if tc.fail != "" && exitcode.Of(err) != exitcode.Restored {
				t.Fatalf("exit %d, want Restored: %v", exitcode.Of(err), err)
			}
			if err := (&ClusterSaver{Dir: dir, Client: d.hs}).Release(quietContext(), s.Run); err != nil {
				t.Fatal(err)
			}
			if got := d.specJSON(t); got != specBefore {
				t.Errorf("spec after the first run:\n got %s\nwant %s", got, specBefore)
			}

			if tc.resume {
				delete(fx.exec.fail, tc.fail)
				run, err := checkpoint.Latest(dir, s.Run.Cluster)
				if err != nil || run == nil {
					t.Fatalf("run file: %v, %v", run, err)
				}
				resumed := fx.state(defaultOptions())
				resumed.Run = run
				if resumed.Out, err = LoadOutputs(run); err != nil {
					t.Fatal(err)
				}
				resumed.Clients.HyperShift = d.hs
				resumed.Saver = &ClusterSaver{Dir: dir, Client: d.hs}
				if err := fx.execute(resumed); err != nil {
					t.Fatalf("resumed run: %v", err)
				}
				if err := (&ClusterSaver{Dir: dir, Client: d.hs}).Release(quietContext(), resumed.Run); err != nil {
					t.Fatal(err)
				}
				if got := d.specJSON(t); got != specBefore {
					t.Errorf("spec after the resumed run:\n got %s\nwant %s", got, specBefore)
				}
			}

			d.checkOwnWrites(t)
			if got := d.object(t).GetAnnotations(); !maps.Equal(got, annBefore) {
				t.Errorf("annotations %v, want %v", got, annBefore)
			}
			// The runs did write: the lock and the pause went through patches.
			var lock, pause int
			for _, p := range d.recorded() {
				switch {
				case strings.Contains(p, RunAnnotation):
					lock++
				case strings.Contains(p, "pausedUntil"):
					pause++
				}
			}
			if lock == 0 || pause < 2 {
				t.Errorf("%d lock and %d pause patches; the test did not exercise the writes", lock, pause)
			}
		})
	}
}
