package localenv

import (
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
)

// ShardMemberIPBase is the last octet of the first etcd shard member's
// address, 127.0.0.51: after every HostedCluster's members (.11 to .43).
const ShardMemberIPBase = 51

// MaxEtcdShards bounds ETCD_SHARDS (127.0.0.51 to .54).
const MaxEtcdShards = 4

// parseEtcdShards reads ETCD_SHARDS: comma-separated shard names, each
// routing the core resource of the same name (e.g. "events").
func parseEtcdShards(v string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, name := range strings.Split(v, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if seen[name] {
			return nil, fmt.Errorf("ETCD_SHARDS=%q names shard %s twice", v, name)
		}
		seen[name] = true
		out = append(out, name)
	}
	if len(out) > MaxEtcdShards {
		return nil, fmt.Errorf("ETCD_SHARDS=%q names %d shards: set at most %d", v, len(out), MaxEtcdShards)
	}
	return out, nil
}

// etcdShardsFromEnv is ETCD_SHARDS, parsed.
func etcdShardsFromEnv() ([]string, error) { return parseEtcdShards(os.Getenv("ETCD_SHARDS")) }

// fixtureShards are the first HostedCluster's shards, with their members'
// addresses.
func (c Config) fixtureShards() []fixture.Shard {
	var out []fixture.Shard
	for i, name := range c.EtcdShards {
		out = append(out, fixture.Shard{Name: name, MemberIP: fmt.Sprintf("127.0.0.%d", ShardMemberIPBase+i)})
	}
	return out
}

// shardsSchema is the OpenAPI schema of spec.etcd.managed.shards, written
// for hcpsnap from the fields of HyperShift's ManagedEtcdShardSpec
// (EtcdSharding feature gate). The pinned HyperShift API module predates
// shards, so its CRDs would prune the field; with ETCD_SHARDS the local
// environment adds this schema to the HostedCluster and HostedControlPlane
// CRDs it applies (the extracted files in .cache are left as they are).
// Remove it once the pin moves to an API version that has shards.
func shardsSchema() map[string]any {
	str := func(extra map[string]any) map[string]any {
		m := map[string]any{"type": "string"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	return map[string]any{
		"type": "array", "minItems": int64(1), "maxItems": int64(10),
		"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"name"},
		"description": "shards are etcd shards, each holding the resources routed to it (added by hcpsnap's local environment).",
		"items": map[string]any{
			"type":     "object",
			"required": []any{"name", "resources", "replicas"},
			"properties": map[string]any{
				"name": str(map[string]any{"minLength": int64(1), "maxLength": int64(48), "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}),
				"resources": map[string]any{
					"type": "array", "minItems": int64(1), "maxItems": int64(20),
					"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": []any{"apiGroup", "resource"},
					"items": map[string]any{
						"type":     "object",
						"required": []any{"apiGroup", "resource"},
						"properties": map[string]any{
							"apiGroup": str(map[string]any{"maxLength": int64(253)}),
							"resource": str(map[string]any{"minLength": int64(1), "maxLength": int64(63)}),
						},
					},
				},
				"replicas": map[string]any{"type": "integer", "format": "int32", "enum": []any{int64(1), int64(3)}},
				"storage": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"type": str(map[string]any{"enum": []any{"PersistentVolume", "EmptyDir"}}),
						"persistentVolume": map[string]any{"type": "object", "properties": map[string]any{
							"storageClassName": str(nil),
						}},
					},
				},
			},
		},
	}
}

// addShardsSchema adds shardsSchema under spec.etcd.managed of every
// version of a HostedCluster or HostedControlPlane CRD; other CRDs are left
// as they are.
func addShardsSchema(crd *unstructured.Unstructured) error {
	switch crd.GetName() {
	case "hostedclusters.hypershift.openshift.io", "hostedcontrolplanes.hypershift.openshift.io":
	default:
		return nil
	}
	versions, _, err := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if err != nil {
		return err
	}
	for i, v := range versions {
		vm, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("CRD %s: spec.versions[%d] is not an object", crd.GetName(), i)
		}
		path := []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "etcd", "properties", "managed", "properties"}
		if _, found, err := unstructured.NestedMap(vm, path...); err != nil || !found {
			return fmt.Errorf("CRD %s version %v has no spec.etcd.managed schema to add shards to", crd.GetName(), vm["name"])
		}
		if err := unstructured.SetNestedField(vm, shardsSchema(), append(path, "shards")...); err != nil {
			return err
		}
		versions[i] = vm
	}
	return unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions")
}
