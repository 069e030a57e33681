package kube

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRESTConfigLimits: the client is not throttled to client-go's default
// of 5 requests a second, which made every checkpoint wait.
func TestRESTConfigLimits(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := RESTConfig(kubeconfig, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS != 20 || cfg.Burst != 40 || cfg.UserAgent != "hcpsnap" {
		t.Errorf("QPS %v, burst %d, user agent %q", cfg.QPS, cfg.Burst, cfg.UserAgent)
	}
}
