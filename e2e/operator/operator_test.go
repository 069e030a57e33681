package operator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

var now = time.Date(2025, 11, 20, 12, 0, 0, 0, time.UTC)

func ptr(s string) *string { return &s }

func TestParsePausedUntil(t *testing.T) {
	tests := []struct {
		name      string
		value     *string
		paused    bool
		remaining time.Duration
		wantErr   bool
	}{
		{name: "absent", value: nil},
		{name: "true", value: ptr("true"), paused: true},
		{name: "True", value: ptr("True"), paused: true},
		{name: "1 (ParseBool accepts it)", value: ptr("1"), paused: true},
		{name: "false", value: ptr("false")},
		{name: "False", value: ptr("False")},
		{name: "future time", value: ptr("2025-11-20T12:10:00Z"), paused: true, remaining: 10 * time.Minute},
		{name: "future time with offset", value: ptr("2025-11-20T13:05:00+01:00"), paused: true, remaining: 5 * time.Minute},
		{name: "past time", value: ptr("2025-11-20T11:59:59Z")},
		{name: "exactly now", value: ptr("2025-11-20T12:00:00Z")},
		{name: "garbage", value: ptr("tomorrow"), wantErr: true},
		{name: "date without zone", value: ptr("2025-11-20T12:10:00"), wantErr: true},
		{name: "empty string", value: ptr(""), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paused, remaining, err := ParsePausedUntil(tt.value, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if paused != tt.paused || remaining != tt.remaining {
				t.Errorf("got paused=%v remaining=%v, want paused=%v remaining=%v", paused, remaining, tt.paused, tt.remaining)
			}
		})
	}
}

func TestDesiredReplicasRoundTrip(t *testing.T) {
	in := map[string]int32{"openshift-apiserver": 2, "kube-apiserver": 3, "openshift-oauth-apiserver": 0}
	s := FormatDesiredReplicas(in)
	if want := "kube-apiserver=3,openshift-apiserver=2,openshift-oauth-apiserver=0"; s != want {
		t.Fatalf("FormatDesiredReplicas = %q, want %q", s, want)
	}
	out, err := ParseDesiredReplicas(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("round trip lost entries: %v", out)
	}
	for k, v := range in {
		if out[k] != v {
			t.Errorf("%s = %d, want %d", k, out[k], v)
		}
	}
}

func TestParseDesiredReplicasErrors(t *testing.T) {
	for _, bad := range []string{"kube-apiserver", "kube-apiserver=x", "=3", "kube-apiserver=-1"} {
		t.Run(bad, func(t *testing.T) {
			if _, err := ParseDesiredReplicas(bad); err == nil {
				t.Errorf("ParseDesiredReplicas(%q) succeeded", bad)
			}
		})
	}
	got, err := ParseDesiredReplicas(" kube-apiserver = 3 , ")
	if err != nil || got["kube-apiserver"] != 3 || len(got) != 1 {
		t.Errorf("got %v, %v", got, err)
	}
}

func hostedCluster(pausedUntil *string) *unstructured.Unstructured {
	hc := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "hypershift.openshift.io/v1beta1",
		"kind":       "HostedCluster",
		"metadata":   map[string]interface{}{"name": "example", "namespace": "clusters", "generation": int64(1)},
		"spec":       map[string]interface{}{"release": map[string]interface{}{"image": "quay.io/x:1"}},
	}}
	if pausedUntil != nil {
		_ = unstructured.SetNestedField(hc.Object, *pausedUntil, "spec", "pausedUntil")
	}
	return hc
}

func hostedControlPlane(pausedUntil *string, annotation string) *unstructured.Unstructured {
	hcp := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "hypershift.openshift.io/v1beta1",
		"kind":       "HostedControlPlane",
		"metadata":   map[string]interface{}{"name": "example", "namespace": "clusters-example"},
		"spec":       map[string]interface{}{"releaseImage": "quay.io/x:1"},
	}}
	if annotation != "" {
		hcp.SetAnnotations(map[string]string{DesiredReplicasAnnotation: annotation})
	}
	if pausedUntil != nil {
		_ = unstructured.SetNestedField(hcp.Object, *pausedUntil, "spec", "pausedUntil")
	}
	return hcp
}

func deployment(name string, replicas int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "clusters-example"},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas},
	}
}

// fakes builds the two fake clients. The typed fake does not implement the
// scale subresource, so a reactor applies an UpdateScale to the Deployment
// the tracker holds and records the scaled names in order.
func fakes(t *testing.T, objs []runtime.Object, deployments ...*appsv1.Deployment) (*dynamicfake.FakeDynamicClient, *kubefake.Clientset, *[]string) {
	t.Helper()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		HostedClusterResource:      "HostedClusterList",
		HostedControlPlaneResource: "HostedControlPlaneList",
	}, objs...)
	var kubeObjs []runtime.Object
	for _, d := range deployments {
		kubeObjs = append(kubeObjs, d)
	}
	kube := kubefake.NewClientset(kubeObjs...)
	scaled := &[]string{}
	kube.PrependReactor("update", "deployments", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "scale" {
			return false, nil, nil
		}
		scale := action.(clienttesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
		gvr := appsv1.SchemeGroupVersion.WithResource("deployments")
		obj, err := kube.Tracker().Get(gvr, action.GetNamespace(), scale.Name)
		if err != nil {
			return true, nil, err
		}
		d := obj.(*appsv1.Deployment).DeepCopy()
		d.Spec.Replicas = &scale.Spec.Replicas
		if err := kube.Tracker().Update(gvr, d, action.GetNamespace()); err != nil {
			return true, nil, err
		}
		*scaled = append(*scaled, scale.Name)
		return true, scale, nil
	})
	return dyn, kube, scaled
}

func replicasOf(t *testing.T, kube *kubefake.Clientset, name string) int32 {
	t.Helper()
	d, err := kube.AppsV1().Deployments("clusters-example").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas
}

func hcpPausedUntil(t *testing.T, dyn *dynamicfake.FakeDynamicClient) (string, bool) {
	t.Helper()
	hcp, err := dyn.Resource(HostedControlPlaneResource).Namespace("clusters-example").Get(context.Background(), "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, found, err := unstructured.NestedString(hcp.Object, "spec", "pausedUntil")
	if err != nil {
		t.Fatal(err)
	}
	return v, found
}

const allThree = "kube-apiserver=3,openshift-apiserver=3,openshift-oauth-apiserver=3"

func TestReconcile(t *testing.T) {
	tests := []struct {
		name        string
		hcPaused    *string
		hcpPaused   *string
		annotation  string
		wantMirror  *string // nil: field absent on the HCP afterwards
		wantScaled  []string
		wantCond    metav1.ConditionStatus
		wantReason  string
		deployments []*appsv1.Deployment
		wantReplica map[string]int32
	}{
		{
			name:        "paused with true: mirror, no scaling",
			hcPaused:    ptr("true"),
			annotation:  allThree,
			wantMirror:  ptr("true"),
			wantCond:    metav1.ConditionFalse,
			wantReason:  ReasonReconciliationPaused,
			deployments: []*appsv1.Deployment{deployment("kube-apiserver", 0), deployment("openshift-apiserver", 0), deployment("openshift-oauth-apiserver", 0)},
			wantReplica: map[string]int32{"kube-apiserver": 0, "openshift-apiserver": 0, "openshift-oauth-apiserver": 0},
		},
		{
			name:        "paused until a future time: mirror, no scaling",
			hcPaused:    ptr("2025-11-20T12:30:00Z"),
			hcpPaused:   ptr("true"),
			annotation:  allThree,
			wantMirror:  ptr("2025-11-20T12:30:00Z"),
			wantCond:    metav1.ConditionFalse,
			wantReason:  ReasonReconciliationPaused,
			deployments: []*appsv1.Deployment{deployment("kube-apiserver", 0), deployment("openshift-apiserver", 0), deployment("openshift-oauth-apiserver", 0)},
			wantReplica: map[string]int32{"kube-apiserver": 0, "openshift-apiserver": 0, "openshift-oauth-apiserver": 0},
		},
		{
			name:        "unpaused (field removed): mirror removal, scale back",
			hcPaused:    nil,
			hcpPaused:   ptr("true"),
			annotation:  allThree,
			wantMirror:  nil,
			wantScaled:  []string{"kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver"},
			wantCond:    metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			deployments: []*appsv1.Deployment{deployment("kube-apiserver", 0), deployment("openshift-apiserver", 0), deployment("openshift-oauth-apiserver", 0)},
			wantReplica: map[string]int32{"kube-apiserver": 3, "openshift-apiserver": 3, "openshift-oauth-apiserver": 3},
		},
		{
			name:        "deadline passed: scale back",
			hcPaused:    ptr("2025-11-20T11:00:00Z"),
			hcpPaused:   ptr("2025-11-20T11:00:00Z"),
			annotation:  "kube-apiserver=2",
			wantMirror:  ptr("2025-11-20T11:00:00Z"),
			wantScaled:  []string{"kube-apiserver"},
			wantCond:    metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			deployments: []*appsv1.Deployment{deployment("kube-apiserver", 0)},
			wantReplica: map[string]int32{"kube-apiserver": 2},
		},
		{
			name:        "false is not paused",
			hcPaused:    ptr("false"),
			annotation:  "kube-apiserver=3",
			wantMirror:  ptr("false"),
			wantScaled:  []string{"kube-apiserver"},
			wantCond:    metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			deployments: []*appsv1.Deployment{deployment("kube-apiserver", 1)},
			wantReplica: map[string]int32{"kube-apiserver": 3},
		},
		{
			name:       "deployments not in the annotation are ignored, missing ones skipped, equal ones untouched",
			annotation: "kube-apiserver=3,openshift-apiserver=3,absent=2",
			wantScaled: []string{"openshift-apiserver"},
			wantCond:   metav1.ConditionTrue,
			wantReason: ReasonAsExpected,
			deployments: []*appsv1.Deployment{
				deployment("kube-apiserver", 3), deployment("openshift-apiserver", 1),
				deployment("openshift-oauth-apiserver", 0), deployment("etcd-operator", 0),
			},
			wantReplica: map[string]int32{"kube-apiserver": 3, "openshift-apiserver": 3, "openshift-oauth-apiserver": 0, "etcd-operator": 0},
		},
		{
			name:        "no annotation: nothing scaled",
			wantCond:    metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			deployments: []*appsv1.Deployment{deployment("kube-apiserver", 0)},
			wantReplica: map[string]int32{"kube-apiserver": 0},
		},
		{
			name:        "unparsable value reconciles, as HyperShift does",
			hcPaused:    ptr("someday"),
			annotation:  "kube-apiserver=3",
			wantMirror:  ptr("someday"),
			wantScaled:  []string{"kube-apiserver"},
			wantCond:    metav1.ConditionTrue,
			wantReason:  ReasonAsExpected,
			deployments: []*appsv1.Deployment{deployment("kube-apiserver", 0)},
			wantReplica: map[string]int32{"kube-apiserver": 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dyn, kube, scaled := fakes(t, []runtime.Object{hostedCluster(tt.hcPaused), hostedControlPlane(tt.hcpPaused, tt.annotation)}, tt.deployments...)
			r := newReconciler(dyn, kube, nil)
			if err := r.reconcileAll(context.Background(), now); err != nil {
				t.Fatal(err)
			}
			got, found := hcpPausedUntil(t, dyn)
			switch {
			case tt.wantMirror == nil && found:
				t.Errorf("HCP spec.pausedUntil = %q, want absent", got)
			case tt.wantMirror != nil && (!found || got != *tt.wantMirror):
				t.Errorf("HCP spec.pausedUntil = %q (found %v), want %q", got, found, *tt.wantMirror)
			}
			if strings.Join(*scaled, ",") != strings.Join(tt.wantScaled, ",") {
				t.Errorf("scaled %v, want %v", *scaled, tt.wantScaled)
			}
			for name, want := range tt.wantReplica {
				if got := replicasOf(t, kube, name); got != want {
					t.Errorf("%s replicas = %d, want %d", name, got, want)
				}
			}
			hc, err := dyn.Resource(HostedClusterResource).Namespace("clusters").Get(context.Background(), "example", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			conds, _, _ := unstructured.NestedSlice(hc.Object, "status", "conditions")
			if len(conds) != 1 {
				t.Fatalf("conditions = %v", conds)
			}
			c := conds[0].(map[string]interface{})
			if c["type"] != ReconciliationActiveCondition || c["status"] != string(tt.wantCond) || c["reason"] != tt.wantReason {
				t.Errorf("condition = %v, want status %s reason %s", c, tt.wantCond, tt.wantReason)
			}
		})
	}
}

// TestReconcileConverges checks that a second pass over a converged cluster
// writes nothing: no patch, no status update, no scale.
func TestReconcileConverges(t *testing.T) {
	dyn, kube, scaled := fakes(t, []runtime.Object{hostedCluster(ptr("true")), hostedControlPlane(nil, allThree)}, deployment("kube-apiserver", 0))
	r := newReconciler(dyn, kube, nil)
	if err := r.reconcileAll(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	dyn.ClearActions()
	kube.ClearActions()
	if err := r.reconcileAll(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	for _, a := range dyn.Actions() {
		if a.GetVerb() != "list" && a.GetVerb() != "get" {
			t.Errorf("second pass wrote: %s %s/%s", a.GetVerb(), a.GetResource().Resource, a.GetSubresource())
		}
	}
	if len(*scaled) != 0 {
		t.Errorf("second pass scaled %v", *scaled)
	}
}

// TestReconcileWithoutHCP checks that a HostedCluster whose control plane does
// not exist yet is not an error and that nothing is created for it.
func TestReconcileWithoutHCP(t *testing.T) {
	dyn, kube, _ := fakes(t, []runtime.Object{hostedCluster(nil)})
	r := newReconciler(dyn, kube, nil)
	if err := r.reconcileAll(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	for _, a := range dyn.Actions() {
		if a.GetVerb() == "create" {
			t.Errorf("created %s", a.GetResource().Resource)
		}
	}
}

// TestReconcileKeepsGoingOnErrors checks that a failing scale is reported but
// does not stop the other Deployments from being scaled.
func TestReconcileKeepsGoingOnErrors(t *testing.T) {
	dyn, kube, scaled := fakes(t, []runtime.Object{hostedCluster(nil), hostedControlPlane(nil, allThree)},
		deployment("kube-apiserver", 0), deployment("openshift-apiserver", 0), deployment("openshift-oauth-apiserver", 0))
	kube.PrependReactor("update", "deployments", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() == "scale" && action.(clienttesting.UpdateAction).GetObject().(*autoscalingv1.Scale).Name == "openshift-apiserver" {
			return true, nil, errors.New("injected")
		}
		return false, nil, nil
	})
	r := newReconciler(dyn, kube, nil)
	err := r.reconcileAll(context.Background(), now)
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("err = %v, want the injected error", err)
	}
	if strings.Join(*scaled, ",") != "kube-apiserver,openshift-oauth-apiserver" {
		t.Errorf("scaled %v", *scaled)
	}
}
