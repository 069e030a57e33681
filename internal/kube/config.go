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
	// client-go's default of 5 requests a second (burst 10) throttled the
	// run: its waits poll every 200 ms, and each checkpoint is a read and
	// an update of the HostedCluster, which then waited ~400 ms for a token.
	// A run stays a light client at these limits.
	cfg.QPS, cfg.Burst = 20, 40
	return WithDialRetry(cfg), nil
}

// Namespace returns the namespace of the kubeconfig's context, as kubectl
// picks it: the context's namespace, else "default"; in a pod with no
// kubeconfig, the service account's namespace.
func Namespace(kubeconfig, contextName string) (string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: contextName}
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).Namespace()
	if err != nil {
		return "", fmt.Errorf("load kubeconfig: %w; set --kubeconfig or KUBECONFIG to a valid file, or run in a pod with a service account", err)
	}
	return ns, nil
}
