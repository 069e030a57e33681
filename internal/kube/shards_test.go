package kube

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

func hostedClusterWith(managed map[string]interface{}) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "hypershift.openshift.io/v1beta1",
		"kind":       "HostedCluster",
		"metadata":   map[string]interface{}{"namespace": "clusters", "name": "example"},
		"spec": map[string]interface{}{"etcd": map[string]interface{}{
			"managementType": "Managed",
			"managed":        managed,
		}},
	}}
	return u
}

func TestEtcdShards(t *testing.T) {
	storage := map[string]interface{}{"type": "PersistentVolume"}
	tests := []struct {
		name    string
		managed map[string]interface{}
		want    []EtcdShard
		wantErr string
	}{
		{name: "absent", managed: map[string]interface{}{"storage": storage}},
		{name: "two shards", managed: map[string]interface{}{"storage": storage, "shards": []interface{}{
			map[string]interface{}{"name": "events", "replicas": int64(1), "storage": map[string]interface{}{"type": "EmptyDir"},
				"resources": []interface{}{map[string]interface{}{"apiGroup": "", "resource": "events"}}},
			map[string]interface{}{"name": "leases", "replicas": int64(3),
				"resources": []interface{}{map[string]interface{}{"apiGroup": "coordination.k8s.io", "resource": "leases"}}},
		}}, want: []EtcdShard{
			{Name: "events", Replicas: 1, StorageType: "EmptyDir", Resources: []EtcdShardResource{{Resource: "events"}}},
			{Name: "leases", Replicas: 3, Resources: []EtcdShardResource{{APIGroup: "coordination.k8s.io", Resource: "leases"}}},
		}},
		{name: "not a list", managed: map[string]interface{}{"shards": "events"}, wantErr: "not a list"},
		{name: "entry not an object", managed: map[string]interface{}{"shards": []interface{}{"events"}}, wantErr: "shards[0] of HostedCluster clusters/example: is a string"},
		{name: "no name", managed: map[string]interface{}{"shards": []interface{}{map[string]interface{}{"replicas": int64(1)}}}, wantErr: "shards[0] of HostedCluster clusters/example: has no name"},
		{name: "replicas not a number", managed: map[string]interface{}{"shards": []interface{}{map[string]interface{}{"name": "a", "replicas": "one"}}}, wantErr: "shards[0]"},
		{name: "resource without name", managed: map[string]interface{}{"shards": []interface{}{map[string]interface{}{"name": "a",
			"resources": []interface{}{map[string]interface{}{"apiGroup": "apps"}}}}}, wantErr: "resources[0] has no resource"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EtcdShards(hostedClusterWith(tt.managed))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestGetHostedClusterDropsShards pins down why hcpsnap reads shards from the
// raw object: the typed read of the pinned API drops them without an error,
// while GetEtcdShards sees them.
func TestGetHostedClusterDropsShards(t *testing.T) {
	u := hostedClusterWith(map[string]interface{}{"shards": []interface{}{
		map[string]interface{}{"name": "events", "replicas": int64(1),
			"resources": []interface{}{map[string]interface{}{"apiGroup": "", "resource": "events"}}},
	}})
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{HostedClusterGVR: "HostedClusterList"}, u)
	h := &HyperShift{Dynamic: dyn}
	hc, err := h.GetHostedCluster(context.Background(), "clusters", "example")
	if err != nil {
		t.Fatal(err)
	}
	if hc.Spec.Etcd.Managed == nil {
		t.Fatal("typed read lost spec.etcd.managed")
	}
	shards, err := h.GetEtcdShards(context.Background(), "clusters", "example")
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != 1 || shards[0].Name != "events" || shards[0].ResourceNames() != "events" {
		t.Fatalf("GetEtcdShards = %+v, want the events shard", shards)
	}
}

func TestEtcdShardResourceString(t *testing.T) {
	s := EtcdShard{Resources: []EtcdShardResource{{Resource: "events"}, {APIGroup: "coordination.k8s.io", Resource: "leases"}}}
	if got, want := s.ResourceNames(), "events,leases.coordination.k8s.io"; got != want {
		t.Fatalf("ResourceNames = %q, want %q", got, want)
	}
}
