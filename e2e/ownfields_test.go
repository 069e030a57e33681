//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// futureField is a HostedCluster spec field that the vendored HyperShift API
// lacks, as a newer HyperShift would add one.
const futureField = "hcpsnapTestFutureField"

// TestBackupWritesOnlyWhatItOwns gives the HostedCluster CRD a spec field
// that hcpsnap's vendored API does not know, sets it, and checks that the
// HostedCluster's .spec (the JSON of a dynamic GET) is byte-identical after
// a backup, after a failed backup (S3 lost during the upload) and after
// that run's resume. An Update of the object decoded into the vendored type
// would erase the field and add zero values.
func TestBackupWritesOnlyWhatItOwns(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	env.addFutureSpecField(t)
	value := map[string]any{"mode": "Strict", "replicas": 3, "zones": []string{"a", "b"}}
	env.setFutureField(t, value)
	defer env.setFutureField(t, nil)

	before := env.specJSON(t)
	if before == "" {
		t.Fatal("the HostedCluster has no spec")
	}
	check := func(t *testing.T, when string) {
		t.Helper()
		if got := env.specJSON(t); got != before {
			t.Errorf("HostedCluster spec changed %s:\n got %s\nwant %s", when, got, before)
		}
	}

	t.Run("backup", func(t *testing.T) {
		res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--prefix", "ownfields-ok")
		if res.code != 0 {
			t.Fatalf("backup exit %d\nstderr:\n%s", res.code, res.stderr)
		}
		check(t, "after a backup")
	})

	t.Run("failed backup, then resume", func(t *testing.T) {
		state := env.state(t)
		stateDir := t.TempDir()
		r := env.startHcpsnap(t, stateDir, nil, "-o", "json", "backup", "--prefix", "ownfields-fail", "--part-size-mib", "5")
		r.waitEvent(t, "upload progress", uploadProgress)
		env.localenv(t, "stop", "minio")
		code := r.wait(t)
		env.localenv(t, "start", "minio")
		env.waitS3(t, env.vars["AWS_SECRET_ACCESS_KEY"])
		if exitcode.Code(code) != exitcode.Restored {
			t.Fatalf("exit %d, want %d (restored)\nstderr:\n%s", code, exitcode.Restored, r.stderr.String())
		}
		check(t, "after a failed backup")
		env.resume(t, stateDir)
		check(t, "after the resume")
		env.invariants(t, state, "ownfields-fail")
	})

	t.Run("killed backup, then resume", func(t *testing.T) {
		state := env.state(t)
		r := env.startHcpsnap(t, t.TempDir(), nil, "-o", "json", "backup", "--prefix", "ownfields-kill")
		r.waitEvent(t, "scale-down done", stepDone("scale-down-apiservers"))
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		r.wait(t)
		env.resume(t, t.TempDir())
		check(t, "after a killed backup's resume")
		env.invariants(t, state, "ownfields-kill")
	})

	hc, err := env.hyper.Dynamic.Resource(kube.HostedClusterGVR).Namespace(env.namespace).Get(ctx, env.cluster, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedFieldNoCopy(hc.Object, "spec", futureField); got == nil {
		t.Errorf("spec.%s is gone", futureField)
	}
}

// specJSON returns the JSON of the HostedCluster's .spec from a dynamic GET
// (encoding/json sorts map keys, so equal specs give equal bytes).
func (e *testEnv) specJSON(t *testing.T) string {
	t.Helper()
	u, err := e.hyper.Dynamic.Resource(kube.HostedClusterGVR).Namespace(e.namespace).Get(context.Background(), e.cluster, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(u.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// setFutureField sets spec.hcpsnapTestFutureField (nil removes it) and waits
// until a read shows it: the apiserver takes a moment to serve a changed CRD
// schema, and until then prunes the field.
func (e *testEnv) setFutureField(t *testing.T, v any) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{futureField: v}})
	if err != nil {
		t.Fatal(err)
	}
	hcs := e.hyper.Dynamic.Resource(kube.HostedClusterGVR).Namespace(e.namespace)
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		u, err := hcs.Patch(ctx, e.cluster, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil {
			return false, err
		}
		_, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", futureField)
		return found == (v != nil), nil
	})
	if err != nil {
		t.Fatalf("set spec.%s to %v: %v", futureField, v, err)
	}
}

// addFutureSpecField adds spec.hcpsnapTestFutureField to every version's
// schema of the HostedCluster CRD with a JSON patch, and removes it again
// when the test ends.
func (e *testEnv) addFutureSpecField(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	crds := e.hyper.Dynamic.Resource(crdGVR)
	name := kube.HostedClusterGVR.Resource + "." + kube.HostedClusterGVR.Group
	crd, err := crds.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	var add, remove []map[string]any
	schemaOf := map[string]any{
		"type": "object",
		"properties": map[string]any{
			"mode":     map[string]any{"type": "string"},
			"replicas": map[string]any{"type": "integer"},
			"zones":    map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
		},
	}
	for i, v := range versions {
		props, found, _ := unstructured.NestedMap(v.(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties")
		if !found {
			continue
		}
		if _, exists := props[futureField]; exists {
			t.Fatalf("the CRD already has spec.%s: a test before this one did not restore it", futureField)
		}
		path := fmt.Sprintf("/spec/versions/%d/schema/openAPIV3Schema/properties/spec/properties/%s", i, futureField)
		add = append(add, map[string]any{"op": "add", "path": path, "value": schemaOf})
		remove = append(remove, map[string]any{"op": "remove", "path": path})
	}
	if len(add) == 0 {
		t.Fatalf("CRD %s has no version with a spec schema", name)
	}
	patch := func(ops []map[string]any) error {
		data, err := json.Marshal(ops)
		if err != nil {
			return err
		}
		_, err = crds.Patch(ctx, name, types.JSONPatchType, data, metav1.PatchOptions{})
		return err
	}
	if err := patch(add); err != nil {
		t.Fatalf("add spec.%s to CRD %s: %v", futureField, name, err)
	}
	t.Cleanup(func() {
		if err := patch(remove); err != nil {
			t.Errorf("restore CRD %s: %v", name, err)
		}
	})
}
