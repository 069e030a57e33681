//go:build e2e

package drill

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// TestStoredSecretsMatchKubeAPIServer cross-checks, once, the fixture's
// encoder and the drill's decoder with a real kube-apiserver (the binary
// `make deps` builds) running with an aescbc EncryptionConfiguration and
// HyperShift's etcd prefix: the drill decrypts what the apiserver wrote,
// and the apiserver reads what the fixture wrote.
func TestStoredSecretsMatchKubeAPIServer(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".cache", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	apiserver := filepath.Join(root, "kube-apiserver")
	if _, err := os.Stat(apiserver); err != nil {
		t.Fatalf("kube-apiserver not built (run make deps): %v", err)
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// etcd on loopback.
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	cu, pu := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	etcd := exec.Command(filepath.Join(root, "etcd-v3.5.17", "etcd"), "--name", "src", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu, "--listen-peer-urls", pu,
		"--initial-advertise-peer-urls", pu, "--initial-cluster", "src="+pu, "--log-level", "error")
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = etcd.Process.Kill(); _ = etcd.Wait() })

	// kube-apiserver with aescbc for Secrets, key name key1.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	saPriv := write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}))
	saPub := write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	tokens := write("tokens.csv", []byte("drill-admin-token,admin,admin,system:masters\n"))
	encCfg := write("encryption.yaml", []byte(fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - name: %s
        secret: %s
  - identity: {}
`, fixture.StoredKeyName, base64.StdEncoding.EncodeToString(key))))
	api := exec.Command(apiserver, "--etcd-servers", cu, "--etcd-prefix", "/kubernetes.io",
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", fmt.Sprint(ports[2]),
		"--cert-dir", filepath.Join(dir, "certs"), "--token-auth-file", tokens, "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saPub,
		"--service-account-signing-key-file", saPriv, "--service-cluster-ip-range", "10.0.0.0/24",
		"--encryption-provider-config", encCfg, "--profiling=false", "--v", "0")
	logf, err := os.Create(filepath.Join(dir, "apiserver.log"))
	if err != nil {
		t.Fatal(err)
	}
	api.Stdout, api.Stderr = logf, logf
	if err := api.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Process.Kill(); _ = api.Wait() })
	kc, err := kubernetes.NewForConfig(&rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", ports[2]), BearerToken: "drill-admin-token",
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := kc.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("kube-apiserver not ready: %v\n%s", ctx.Err(), tail(log))
		case <-time.After(500 * time.Millisecond):
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	// 1. The apiserver writes; the drill's decoder reads.
	want := map[string][]byte{"token": []byte("written-by-kube-apiserver")}
	if _, err := kc.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "from-apiserver"}, Data: want}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/kubernetes.io/secrets/default/from-apiserver")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the apiserver's Secret in etcd: %v, %d keys", err, len(resp.Kvs))
	}
	env := ParseEnvelope(resp.Kvs[0].Value)
	if env.Storage != StoredAESCBC || env.KeyName != fixture.StoredKeyName {
		t.Fatalf("the apiserver stored an envelope %+v, want aescbc %s", env, fixture.StoredKeyName)
	}
	if _, err := openSecret(env, []namedKey{{manifest.RoleActiveKey, key}}, "default", "from-apiserver"); err != nil {
		t.Errorf("the drill cannot open the apiserver's Secret: %v", err)
	}
	if _, err := openSecret(env, []namedKey{{manifest.RoleActiveKey, testKeyB}}, "default", "from-apiserver"); err == nil {
		t.Error("another key opened the apiserver's Secret")
	}

	// 2. The fixture writes; the apiserver reads.
	if err := fixture.WriteStored(ctx, cli, key); err != nil {
		t.Fatal(err)
	}
	for _, k := range fixture.StoredKeys()["secrets"] {
		ns, name := secretName(k)
		s, err := kc.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("kube-apiserver cannot read the fixture's Secret %s: %v", k, err)
			continue
		}
		if len(s.Data["token"]) == 0 {
			t.Errorf("the fixture's Secret %s reads back without its data", k)
		}
	}
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
