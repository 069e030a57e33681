package localenv

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestParseEtcdShards(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "", want: ""},
		{in: "events", want: "events"},
		{in: " events , leases ", want: "events,leases"},
		{in: "events,events", err: "twice"},
		{in: "a,b,c,d,e", err: "at most 4"},
	} {
		got, err := parseEtcdShards(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	cfg := Config{EtcdShards: []string{"events", "leases"}}
	fx := cfg.fixtureShards()
	if len(fx) != 2 || fx[0].MemberIP != "127.0.0.51" || fx[1].MemberIP != "127.0.0.52" {
		t.Errorf("fixture shards %+v", fx)
	}
}

// TestAddShardsSchema: the schema lands under spec.etcd.managed of every
// version of the HostedCluster CRD; other CRDs are untouched; a CRD without
// spec.etcd.managed is an error rather than a silent no-op.
func TestAddShardsSchema(t *testing.T) {
	managed := func() map[string]any {
		return map[string]any{"name": "v1beta1", "schema": map[string]any{"openAPIV3Schema": map[string]any{"properties": map[string]any{
			"spec": map[string]any{"properties": map[string]any{"etcd": map[string]any{"properties": map[string]any{
				"managed": map[string]any{"properties": map[string]any{"storage": map[string]any{"type": "object"}}}}}}}}}}}
	}
	crd := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "hostedclusters.hypershift.openshift.io"},
		"spec": map[string]any{"versions": []any{managed()}}}}
	if err := addShardsSchema(crd); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	props := []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "etcd", "properties", "managed", "properties"}
	shards, found, err := unstructured.NestedMap(versions[0].(map[string]any), append(props, "shards")...)
	if err != nil || !found || shards["type"] != "array" {
		t.Fatalf("shards schema %v, %v, %v", shards, found, err)
	}
	if _, found, _ := unstructured.NestedMap(versions[0].(map[string]any), append(props, "storage")...); !found {
		t.Error("the storage schema is gone")
	}

	other := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "nodepools.hypershift.openshift.io"},
		"spec": map[string]any{"versions": []any{managed()}}}}
	if err := addShardsSchema(other); err != nil {
		t.Fatal(err)
	}
	versions, _, _ = unstructured.NestedSlice(other.Object, "spec", "versions")
	if _, found, _ := unstructured.NestedMap(versions[0].(map[string]any), append(props, "shards")...); found {
		t.Error("shards added to the NodePool CRD")
	}

	bare := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "hostedcontrolplanes.hypershift.openshift.io"},
		"spec": map[string]any{"versions": []any{map[string]any{"name": "v1beta1"}}}}}
	if err := addShardsSchema(bare); err == nil || !strings.Contains(err.Error(), "no spec.etcd.managed schema") {
		t.Errorf("CRD without spec.etcd.managed: %v", err)
	}
}
