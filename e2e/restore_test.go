//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/restore"
	hs3 "github.com/hcpsnap/hcpsnap/s3"
)

const renderFile = "testdata/render-none.yaml"

// TestRestoreRoundTrip backs up the environment's hosted cluster, restores
// the backup into a render of a new cluster, validates the result against
// the live CRDs, then does what HyperShift's etcd-init does with the URL it
// finds there and compares every key and value with the source.
func TestRestoreRoundTrip(t *testing.T) {
	env := loadEnv(t)
	for _, via := range vias {
		t.Run("via "+via, func(t *testing.T) { restoreRoundTrip(t, env, via) })
	}
}

// restoreRoundTrip backs up with --via via, checks the object against the
// manifest with etcdutl, restores it, and compares every key and value with
// the source at the manifest's revision.
func restoreRoundTrip(t *testing.T, env *testEnv, via string) {
	ctx := context.Background()
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--via", via, "--prefix", "roundtrip-"+via)
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	sum := lastSummary(t, res.stdout)
	m := env.readManifest(t, sum.Manifest)
	if m.Via != via {
		t.Fatalf("manifest says via %q, want %q", m.Via, via)
	}
	env.checkSnapshot(t, m)

	// --from names the snapshot here; the manifest beside it is found.
	out := filepath.Join(t.TempDir(), "cluster.yaml")
	res = env.hcpsnap(t, t.TempDir(), "restore", "--from", sum.Snapshot,
		"-f", renderFile, "--out", out, "--verify", "--server-dry-run")
	if res.code != 0 {
		t.Fatalf("restore exit %d:\n%s", res.code, res.stderr)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("output %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	hc, secrets := readResult(t, out)
	urls := hc.Spec.Etcd.Managed.Storage.RestoreSnapshotURL
	if len(urls) != 1 {
		t.Fatalf("restoreSnapshotURL has %d entries, want 1", len(urls))
	}
	if strings.Contains(res.stderr, urls[0]) || strings.Contains(res.stderr, "X-Amz-Signature") {
		t.Fatal("the presigned URL appears in the logs")
	}

	// The AES key in the result is the backed-up cluster's.
	live, err := env.kube.CoreV1().Secrets(env.namespace).Get(ctx, env.cluster+"-etcd-encryption-key", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keySecret := secrets[hc.Namespace+"/"+hc.Spec.SecretEncryption.AESCBC.ActiveKey.Name]
	if !bytes.Equal(keySecret.Data["key"], live.Data["key"]) {
		t.Fatal("the result's AES key differs from the backed-up cluster's")
	}
	if strings.Contains(res.stderr, string(live.Data["key"])) {
		t.Fatal("the AES key appears in the logs")
	}

	// etcd-init: GET without credentials, etcdutl snapshot restore with
	// --bump-revision and --mark-compacted, start etcd on it.
	snap := filepath.Join(t.TempDir(), "snapshot.db")
	download(t, urls[0], snap)
	restored := startRestoredEtcd(t, env, snap)
	source, err := fixture.EtcdClient(env.FixtureConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	want := allKeys(t, source, m.Etcd.Revision)
	got := allKeys(t, restored, 0)
	if len(want) < 100 {
		t.Fatalf("the source holds only %d keys at revision %d", len(want), m.Etcd.Revision)
	}
	if len(got) != len(want) {
		t.Errorf("restored etcd holds %d keys, the source held %d at revision %d", len(got), len(want), m.Etcd.Revision)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
			t.Fatalf("key %q differs after the restore", k)
		}
	}
}

func TestRestoreExpiredURLFailsVerify(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--online", "--prefix", "expiry")
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	m := env.readManifest(t, lastSummary(t, res.stdout).Manifest)
	store := env.store(t)
	url, _, err := store.Presign(ctx, m.Snapshot.Key, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	err = restore.Verify(ctx, http.DefaultClient, url, m)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("verify of an expired URL: %v, want a 403", err)
	}
	if strings.Contains(err.Error(), "X-Amz-Signature") {
		t.Fatal("the error shows the presigned URL")
	}
	good, _, err := store.Presign(ctx, m.Snapshot.Key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := restore.Verify(ctx, http.DefaultClient, good, m); err != nil {
		t.Fatalf("verify of a good URL: %v", err)
	}
}

// ---------------------------------------------------------------------------

// FixtureConfig is the environment's fixture configuration, for clients of
// the hosted etcd.
func (e *testEnv) FixtureConfig() fixture.Config {
	return fixture.Config{Name: e.cluster, Namespace: e.namespace, StateDir: filepath.Join(e.vars["LOCALENV_DIR"], "fixture")}
}

func (e *testEnv) store(t *testing.T) *hs3.Store {
	t.Helper()
	for k, v := range e.vars {
		if strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, v)
		}
	}
	s, err := hs3.Open(context.Background(), hs3.Config{Bucket: e.bucket})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readResult(t *testing.T, path string) (*hyperv1.HostedCluster, map[string]corev1.Secret) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var hc *hyperv1.HostedCluster
	secrets := map[string]corev1.Secret{}
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		var meta metav1.TypeMeta
		_ = json.Unmarshal(raw, &meta)
		switch meta.Kind {
		case "HostedCluster":
			hc = &hyperv1.HostedCluster{}
			if err := json.Unmarshal(raw, hc); err != nil {
				t.Fatal(err)
			}
		case "Secret":
			var s corev1.Secret
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			secrets[s.Namespace+"/"+s.Name] = s
		}
	}
	if hc == nil {
		t.Fatal("no HostedCluster in the result")
	}
	return hc, secrets
}

func download(t *testing.T, url, to string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET of the restore URL: %s", resp.Status)
	}
	f, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
}

// startRestoredEtcd restores the snapshot as HyperShift's etcd-init does
// and starts a one-member etcd on it, on free loopback ports.
func startRestoredEtcd(t *testing.T, e *testEnv, snap string) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	client, peer := freePort(t), freePort(t)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	out, err := exec.Command(e.vars["ETCDUTL"], "snapshot", "restore", snap, "--data-dir", data,
		"--name", "restored", "--initial-cluster", "restored="+peerURL, "--initial-advertise-peer-urls", peerURL,
		"--bump-revision", "1000000000", "--mark-compacted").CombinedOutput()
	if err != nil {
		t.Fatalf("etcdutl snapshot restore: %v: %s", err, out)
	}
	cmd := exec.Command(e.vars["ETCD"], "--name", "restored", "--data-dir", data,
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "restored="+peerURL, "--listen-metrics-urls", "", "--log-level", "warn")
	logf, _ := os.Create(filepath.Join(dir, "etcd.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "health-probe")
		cancel()
		if err == nil {
			return cli
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored etcd never answered: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// allKeys reads every key and value, at rev (0: the latest), in pages.
func allKeys(t *testing.T, cli *clientv3.Client, rev int64) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	key := "\x00"
	for {
		opts := []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(50)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := cli.Get(ctx, key, opts...)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = kv.Value
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestRestoreApply(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--online", "--prefix", "apply")
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	manifestURL := lastSummary(t, res.stdout).Manifest
	t.Cleanup(func() {
		bg := metav1.DeletePropagationBackground
		_ = env.dynamicDelete(ctx, "hostedclusters", env.namespace, "restored")
		_ = env.dynamicDelete(ctx, "nodepools", env.namespace, "restored")
		_ = env.kube.CoreV1().Secrets(env.namespace).Delete(ctx, "restored-etcd-encryption-key", metav1.DeleteOptions{})
		_ = env.kube.CoreV1().Secrets(env.namespace).Delete(ctx, "restored-pull-secret", metav1.DeleteOptions{})
		_ = env.kube.CoreV1().Namespaces().Delete(ctx, env.namespace+"-restored", metav1.DeleteOptions{PropagationPolicy: &bg})
	})
	res = env.hcpsnap(t, t.TempDir(), "restore", "--from", manifestURL, "-f", renderFile, "--apply", "--out", filepath.Join(t.TempDir(), "c.yaml"))
	if res.code != 0 {
		t.Fatalf("restore --apply exit %d:\n%s", res.code, res.stderr)
	}
	hc, err := env.hyper.GetHostedCluster(ctx, env.namespace, "restored")
	if err != nil {
		t.Fatalf("the applied HostedCluster: %v", err)
	}
	if n := len(hc.Spec.Etcd.Managed.Storage.RestoreSnapshotURL); n != 1 {
		t.Fatalf("applied HostedCluster has %d restore URLs", n)
	}
	for _, name := range []string{"root-ca", "etcd-signer", "sa-signing-key"} {
		if _, err := env.kube.CoreV1().Secrets(env.namespace+"-restored").Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("Secret %s not applied: %v", name, err)
		}
	}
	res = env.hcpsnap(t, t.TempDir(), "restore", "--from", manifestURL, "-f", renderFile, "--apply", "--out", filepath.Join(t.TempDir(), "c.yaml"))
	if exitcode.Code(res.code) != exitcode.Precondition || !strings.Contains(lastLine(res.stderr), "already exists") {
		t.Fatalf("a second --apply: exit %d, %q; want 3 and 'already exists'", res.code, lastLine(res.stderr))
	}
}

func (e *testEnv) dynamicDelete(ctx context.Context, resource, namespace, name string) error {
	gvr := hyperv1.GroupVersion.WithResource(resource)
	return e.hyper.Dynamic.Resource(gvr).Namespace(namespace).Delete(ctx, name, metav1.DeleteOptions{})
}
