package kube

import (
	"context"
	"fmt"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// The HyperShift resources hcpsnap reads and patches.
var (
	HostedClusterGVR       = hyperv1.GroupVersion.WithResource("hostedclusters")
	HostedControlPlaneGVR  = hyperv1.GroupVersion.WithResource("hostedcontrolplanes")
	hostedClusterKind      = hyperv1.GroupVersion.WithKind("HostedCluster")
	hostedControlPlaneKind = hyperv1.GroupVersion.WithKind("HostedControlPlane")
)

// HyperShift reads and patches HyperShift objects through the dynamic client
// and converts what it reads to the typed API of
// github.com/openshift/hypershift/api, which keeps hcpsnap free of a
// generated clientset. The typed objects are for reading only.
type HyperShift struct {
	Dynamic dynamic.Interface
}

// GetHostedCluster returns the HostedCluster namespace/name.
func (h *HyperShift) GetHostedCluster(ctx context.Context, namespace, name string) (*hyperv1.HostedCluster, error) {
	u, err := h.Dynamic.Resource(HostedClusterGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	hc := &hyperv1.HostedCluster{}
	return hc, fromUnstructured(u, hc, hostedClusterKind)
}

// HostedClusterRef names a HostedCluster.
type HostedClusterRef struct {
	Namespace, Name string
}

// ListHostedClusters names the HostedClusters of namespace ("" for every
// namespace) that match the label selector: a fleet backs each one up
// through the same path as a single cluster, which reads the object again.
func (h *HyperShift) ListHostedClusters(ctx context.Context, namespace, selector string) ([]HostedClusterRef, error) {
	hcs, err := h.HostedClusters(ctx, namespace, selector)
	if err != nil {
		return nil, err
	}
	out := make([]HostedClusterRef, len(hcs))
	for i, hc := range hcs {
		out[i] = HostedClusterRef{Namespace: hc.Namespace, Name: hc.Name}
	}
	return out, nil
}

// HostedClusters returns the HostedClusters of namespace ("" for every
// namespace) that match the label selector, following the list's pages,
// converted for reading.
func (h *HyperShift) HostedClusters(ctx context.Context, namespace, selector string) ([]hyperv1.HostedCluster, error) {
	var out []hyperv1.HostedCluster
	opts := metav1.ListOptions{LabelSelector: selector, Limit: 500}
	for {
		list, err := h.Dynamic.Resource(HostedClusterGVR).Namespace(namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			var hc hyperv1.HostedCluster
			if err := fromUnstructured(&list.Items[i], &hc, hostedClusterKind); err != nil {
				return nil, err
			}
			out = append(out, hc)
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return out, nil
		}
	}
}

// PatchHostedCluster applies a JSON merge patch to the HostedCluster. It is
// the only way hcpsnap changes a HostedCluster: a patch names the fields it
// sets and leaves every other one as the server has it, including fields
// that the vendored API does not know. There is deliberately no Update of a
// decoded object, which would erase them.
func (h *HyperShift) PatchHostedCluster(ctx context.Context, namespace, name string, patch []byte) (*hyperv1.HostedCluster, error) {
	u, err := h.Dynamic.Resource(HostedClusterGVR).Namespace(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "hcpsnap"})
	if err != nil {
		return nil, err
	}
	hc := &hyperv1.HostedCluster{}
	return hc, fromUnstructured(u, hc, hostedClusterKind)
}

// GetHostedControlPlane returns the HostedControlPlane namespace/name.
func (h *HyperShift) GetHostedControlPlane(ctx context.Context, namespace, name string) (*hyperv1.HostedControlPlane, error) {
	u, err := h.Dynamic.Resource(HostedControlPlaneGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	hcp := &hyperv1.HostedControlPlane{}
	return hcp, fromUnstructured(u, hcp, hostedControlPlaneKind)
}

func fromUnstructured(u *unstructured.Unstructured, into runtime.Object, gvk schema.GroupVersionKind) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return fmt.Errorf("decode %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
	}
	return nil
}
