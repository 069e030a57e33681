package kube

import (
	"context"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HostedClusters returns every HostedCluster of namespace ("" for every
// namespace), following the list's pages, converted for reading.
func (h *HyperShift) HostedClusters(ctx context.Context, namespace string) ([]hyperv1.HostedCluster, error) {
	var out []hyperv1.HostedCluster
	opts := metav1.ListOptions{Limit: 500}
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
