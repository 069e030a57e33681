package kube

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig loads the client configuration the way kubectl does: an explicit
// kubeconfig path, else $KUBECONFIG, else ~/.kube/config, else the in-cluster
// service account; contextName selects a context when not empty.
func RESTConfig(kubeconfig, contextName string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: contextName}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w; set --kubeconfig or KUBECONFIG to a valid file, or run in a pod with a service account", err)
	}
	cfg.UserAgent = "hcpsnap"
	return WithDialRetry(cfg), nil
}
