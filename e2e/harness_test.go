//go:build e2e

// Package e2e holds the tests that run against the real local environment
// (make env-up): a real apiserver, controller-manager, etcd, MinIO, the node
// agent and the operator stand-in. They check results with independent
// clients, never through hcpsnap's own code paths alone.
package e2e

import (
	"sync"
	"testing"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hcpsnap/hcpsnap/e2e/localenv"
	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// testEnv is the running local environment as the tests see it.
type testEnv struct {
	vars         map[string]string
	restConfig   *rest.Config
	kube         kubernetes.Interface
	hyper        *kube.HyperShift
	executor     *kube.Executor
	cluster      string
	namespace    string
	hcpNamespace string
	bucket       string
}

var (
	envOnce sync.Once
	envVal  *testEnv
	envErr  error
)

// loadEnv reads .localenv/env once and builds the clients; the tests fail
// (not skip) without an environment, since `make test` always starts one.
func loadEnv(t *testing.T) *testEnv {
	t.Helper()
	envOnce.Do(func() {
		vars, err := localenv.ReadEnv(localenv.DefaultEnvFile())
		if err != nil {
			envErr = err
			return
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", vars["KUBECONFIG"])
		if err != nil {
			envErr = err
			return
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			envErr = err
			return
		}
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			envErr = err
			return
		}
		envVal = &testEnv{
			vars: vars, restConfig: cfg, kube: client,
			hyper:        &kube.HyperShift{Dynamic: dyn},
			executor:     &kube.Executor{Config: cfg, Client: client},
			cluster:      vars["HCPSNAP_CLUSTER"],
			namespace:    vars["HCPSNAP_NAMESPACE"],
			hcpNamespace: vars["HCPSNAP_NAMESPACE"] + "-" + vars["HCPSNAP_CLUSTER"],
			bucket:       vars["HCPSNAP_BUCKET"],
		}
	})
	if envErr != nil {
		t.Fatalf("local environment: %v", envErr)
	}
	return envVal
}
