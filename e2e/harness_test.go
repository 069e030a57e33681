//go:build e2e

// Package e2e holds the tests that run against the real local environment
// (make env-up): a real apiserver, controller-manager, etcd, MinIO, the node
// agent and the operator stand-in. They check results with independent
// clients, never through hcpsnap's own code paths alone.
package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

// ImageRepository is the made-up registry and repository of the image reference that pods of the tests use for
// hcpsnap's image. The node agent finds an image by its digest in the layout `make image` wrote, whatever the
// repository; nothing is pulled.
const ImageRepository = "registry.example/hcpsnap"

// hcpsnapImage returns the reference by which a pod runs the image that `make image` wrote:
// ImageRepository@<manifest digest of the layout in $HCPSNAP_IMAGE_LAYOUT, else ../bin/image/oci>.
func hcpsnapImage(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("HCPSNAP_IMAGE_LAYOUT")
	if dir == "" {
		dir = filepath.Join("..", "bin", "image", "oci")
	}
	digest, err := layoutDigest(dir)
	if err != nil {
		t.Fatalf("hcpsnap's image: %v (run 'make image', or the tests through 'make test')", err)
	}
	return ImageRepository + "@" + digest
}

// layoutDigest reads the manifest digest of the only image of an OCI image layout from its index.json.
func layoutDigest(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return "", err
	}
	var index struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return "", fmt.Errorf("%s/index.json: %w", dir, err)
	}
	if len(index.Manifests) != 1 {
		return "", fmt.Errorf("%s/index.json lists %d images, want 1", dir, len(index.Manifests))
	}
	return index.Manifests[0].Digest, nil
}
