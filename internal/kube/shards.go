package kube

import (
	"context"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// EtcdShard is one entry of a HostedCluster's spec.etcd.managed.shards
// (HyperShift's EtcdSharding feature): its own etcd StatefulSet
// etcd-<Name> that holds the resources routed to it. The HyperShift API
// module hcpsnap builds against predates shards and drops the field when it
// converts a HostedCluster, so hcpsnap reads it from the raw object into
// this type of its own.
type EtcdShard struct {
	Name      string
	Resources []EtcdShardResource
	// StorageType is "PersistentVolume", "EmptyDir", or "" when the shard
	// inherits the default member's storage.
	StorageType string
	Replicas    int32
}

// EtcdShardResource is a resource routed to a shard; APIGroup "" is the
// core group.
type EtcdShardResource struct {
	APIGroup string
	Resource string
}

// String names the resource as kubectl does: "events", "leases.coordination.k8s.io".
func (r EtcdShardResource) String() string {
	if r.APIGroup == "" {
		return r.Resource
	}
	return r.Resource + "." + r.APIGroup
}

// ResourceNames lists the shard's resources as String names them, comma-separated.
func (s EtcdShard) ResourceNames() string {
	names := make([]string, len(s.Resources))
	for i, r := range s.Resources {
		names[i] = r.String()
	}
	return strings.Join(names, ",")
}

// GetEtcdShards reads spec.etcd.managed.shards of the HostedCluster
// namespace/name; none when the field is absent.
func (h *HyperShift) GetEtcdShards(ctx context.Context, namespace, name string) ([]EtcdShard, error) {
	u, err := h.Dynamic.Resource(HostedClusterGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return EtcdShards(u)
}

// EtcdShards reads spec.etcd.managed.shards of a HostedCluster or
// HostedControlPlane; none when the field is absent. An entry that is not
// what HyperShift's API allows (no name, a field of the wrong type) is an
// error naming the field, never skipped: skipping it would hide a shard
// whose data a backup then misses.
func EtcdShards(u *unstructured.Unstructured) ([]EtcdShard, error) {
	raw, found, err := unstructured.NestedFieldNoCopy(u.Object, "spec", "etcd", "managed", "shards")
	if err != nil {
		return nil, fmt.Errorf("spec.etcd.managed.shards of %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	if !found || raw == nil {
		return nil, nil
	}
	items, ok := raw.([]interface{})
	if !ok {
		return nil, fmt.Errorf("spec.etcd.managed.shards of %s %s/%s is a %T, not a list", u.GetKind(), u.GetNamespace(), u.GetName(), raw)
	}
	out := make([]EtcdShard, 0, len(items))
	for i, item := range items {
		field := fmt.Sprintf("spec.etcd.managed.shards[%d]", i)
		sh, err := parseShard(item)
		if err != nil {
			return nil, fmt.Errorf("%s of %s %s/%s: %w", field, u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		out = append(out, sh)
	}
	return out, nil
}

func parseShard(item interface{}) (EtcdShard, error) {
	m, ok := item.(map[string]interface{})
	if !ok {
		return EtcdShard{}, fmt.Errorf("is a %T, not an object", item)
	}
	var sh EtcdShard
	name, _, err := unstructured.NestedString(m, "name")
	if err != nil {
		return sh, err
	}
	if name == "" {
		return sh, fmt.Errorf("has no name")
	}
	sh.Name = name
	replicas, _, err := unstructured.NestedInt64(m, "replicas")
	if err != nil {
		return sh, err
	}
	sh.Replicas = int32(replicas)
	if sh.StorageType, _, err = unstructured.NestedString(m, "storage", "type"); err != nil {
		return sh, err
	}
	resources, _, err := unstructured.NestedSlice(m, "resources")
	if err != nil {
		return sh, err
	}
	for j, r := range resources {
		rm, ok := r.(map[string]interface{})
		if !ok {
			return sh, fmt.Errorf("resources[%d] is a %T, not an object", j, r)
		}
		var res EtcdShardResource
		if res.APIGroup, _, err = unstructured.NestedString(rm, "apiGroup"); err != nil {
			return sh, fmt.Errorf("resources[%d]: %w", j, err)
		}
		if res.Resource, _, err = unstructured.NestedString(rm, "resource"); err != nil {
			return sh, fmt.Errorf("resources[%d]: %w", j, err)
		}
		if res.Resource == "" {
			return sh, fmt.Errorf("resources[%d] has no resource", j)
		}
		sh.Resources = append(sh.Resources, res)
	}
	return sh, nil
}
