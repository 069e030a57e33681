package command

import (
	"context"
	"encoding/json"
	"maps"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/steps"
)

// runAnnotated is a HostedCluster held by a backup run into bucket that
// chose timestamp ts (none when empty), finished or not.
func runAnnotated(t *testing.T, ns, name, bucket, ts string, finished bool) *unstructured.Unstructured {
	hc, _ := runAnnotatedID(t, ns, name, bucket, ts, finished)
	return hc
}

func runAnnotatedID(t *testing.T, ns, name, bucket, ts string, finished bool) (*unstructured.Unstructured, string) {
	t.Helper()
	run := checkpoint.New("backup", checkpoint.Cluster{Namespace: ns, Name: name}, "host", []string{"preflight"}, time.Now())
	run.Finished = finished
	run.Options, _ = json.Marshal(steps.Options{Cluster: name, Namespace: ns, Bucket: bucket, Prefix: "backups"})
	if ts != "" {
		run.Outputs, _ = json.Marshal(steps.Outputs{Timestamp: ts})
	}
	data, err := json.Marshal(run)
	if err != nil {
		t.Fatal(err)
	}
	hc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
		"metadata": map[string]any{"name": name, "namespace": ns, "annotations": map[string]any{steps.RunAnnotation: string(data)}},
	}}
	return hc, run.RunID
}

// TestRunsInProgress: only active runs into this bucket that chose their
// folder are named; garbled annotations and other buckets are not.
func TestRunsInProgress(t *testing.T) {
	running, runID := runAnnotatedID(t, "clusters", "a", "bkt", "20260305T120000Z", false)
	garbled := runAnnotated(t, "team", "g", "bkt", "20260305T120000Z", false)
	garbled.SetAnnotations(map[string]string{steps.RunAnnotation: "{"})
	objs := []runtime.Object{
		running,
		runAnnotated(t, "team", "a", "bkt", "20260306T120000Z", true),    // finished
		runAnnotated(t, "team", "b", "other", "20260306T120000Z", false), // another bucket
		runAnnotated(t, "team", "c", "bkt", "", false),                   // before preflight
		garbled,
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{kube.HostedClusterGVR: "HostedClusterList"}, objs...)
	got, err := runsInProgress(context.Background(), &kube.HyperShift{Dynamic: dyn}, "bkt")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"backups/a/20260305T120000Z": runID}
	if !maps.Equal(got, want) {
		t.Errorf("runs in progress %v, want %v", got, want)
	}
}
