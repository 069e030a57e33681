//go:build e2e

package drill

import (
	"context"
	"crypto/aes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// TestDrillRealSnapshots drills snapshots saved by real etcd 3.5 and 3.6
// servers (the binaries `make deps` builds), with Secrets encrypted by
// kube-apiserver's own aescbc transformer: the restore and server code this
// build links must open both.
func TestDrillRealSnapshots(t *testing.T) {
	for _, v := range []string{"v3.5.17", "v3.6.5"} {
		t.Run(v, func(t *testing.T) {
			bin, err := filepath.Abs(filepath.Join("..", ".cache", "bin", "etcd-"+v))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(bin, "etcd")); err != nil {
				t.Fatalf("etcd %s not built (run make deps): %v", v, err)
			}
			keyA := []byte("0123456789abcdef0123456789abcdef")
			keyB := []byte("fedcba9876543210fedcba9876543210")
			snap, st := saveSnapshot(t, bin, keyA)
			full := snap
			etcdSum := hex.EncodeToString(full[len(full)-32:])
			fileSum := sha256.Sum256(full)
			b := putBackup(&memStore{}, full, st.etcd(etcdSum), hex.EncodeToString(fileSum[:]))
			store := &memStore{objects: map[string][]byte{b.Manifest.Snapshot.Key: full},
				meta: map[string]map[string]string{b.Manifest.Snapshot.Key: {manifest.MetaRunID: "run-1"}}}
			scratch := t.TempDir()
			run := func(bundle []corev1.Secret) (*Result, error) {
				t.Helper()
				res, err := Run(context.Background(), store, b, Options{ScratchDir: scratch, KeyBundle: bundle, Logger: zap.NewNop()})
				if left, _ := os.ReadDir(scratch); len(left) != 0 {
					t.Errorf("scratch folder not empty after the drill: %v", left)
				}
				return res, err
			}

			res, err := run(bundleWith(keyA))
			if err != nil {
				t.Fatalf("drill of a good backup: %v\nchecks: %+v", err, res.Checks)
			}
			if res.Revision != st.Revision+RevisionBump {
				t.Errorf("revision %d, want %d + %d", res.Revision, st.Revision, RevisionBump)
			}
			c := res.Contents
			if c.Resources["secrets"] != 4 || c.Resources["namespaces"] != 2 || c.Resources["config.openshift.io/clusterversions"] != 1 {
				t.Errorf("resources = %v", c.Resources)
			}
			if got := strings.Join(c.Namespaces, ","); got != "default,demo" {
				t.Errorf("namespaces = %s", got)
			}
			if c.Secrets.AESCBC != 3 || c.Secrets.Decrypted != 3 || c.Secrets.Plain != 1 {
				t.Errorf("secrets = %+v", c.Secrets)
			}
			if c.Keys != int64(st.liveKeys) {
				t.Errorf("keys = %d, want %d", c.Keys, st.liveKeys)
			}
			for _, l := range res.Checks {
				t.Logf("%s: %s", l.Name, l.Detail)
			}

			if _, err := run(bundleWith(keyB)); !errors.Is(err, ErrKeyMismatch) {
				t.Errorf("drill with another key: %v, want %v", err, ErrKeyMismatch)
			}
			store.objects[b.Manifest.Snapshot.Key] = full[:len(full)/2]
			if _, err := run(bundleWith(keyA)); !errors.Is(err, ErrUnusable) {
				t.Errorf("drill of a truncated snapshot: %v, want %v", err, ErrUnusable)
			}
		})
	}
}

func bundleWith(key []byte) []corev1.Secret { return bundleWithRole(key, manifest.RoleActiveKey) }

type snapStatus struct {
	Revision  int64  `json:"revision"`
	TotalKey  int64  `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
	Version   string `json:"version"`
	liveKeys  int
}

func (s snapStatus) etcd(sum string) manifest.Etcd {
	return manifest.Etcd{Revision: s.Revision, TotalKeys: s.TotalKey, TotalSize: s.TotalSize, SHA256: sum, StorageVersion: s.Version}
}

// saveSnapshot starts the etcd in bin on loopback, writes objects as
// kube-apiserver stores them, saves a snapshot and reads its status.
func saveSnapshot(t *testing.T, bin string, key []byte) ([]byte, snapStatus) {
	t.Helper()
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cu, pu := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	cmd := exec.Command(filepath.Join(bin, "etcd"), "--name", "src", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu, "--listen-peer-urls", pu,
		"--initial-advertise-peer-urls", pu, "--initial-cluster", "src="+pu, "--log-level", "error")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, DialTimeout: 30 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	block, _ := aes.NewCipher(key)
	tr := value.NewPrefixTransformers(nil, value.PrefixTransformer{Prefix: []byte("k8s:enc:aescbc:v1:key1:"), Transformer: aestransformer.NewCBCTransformer(block)})
	put := func(k string, v []byte) {
		t.Helper()
		for i := 0; ; i++ {
			_, err := cli.Put(ctx, k, string(v))
			if err == nil {
				return
			}
			if i > 50 {
				t.Fatalf("put %s: %v", k, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, ns := range []string{"default", "demo"} {
		v, err := encodeForTest(&corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil {
			t.Fatal(err)
		}
		put("/kubernetes.io/namespaces/"+ns, v)
	}
	for i, ref := range []string{"default/a", "demo/b", "demo/c", "demo/plain"} {
		ns, name, _ := strings.Cut(ref, "/")
		k := "/kubernetes.io/secrets/" + ref
		v, err := encodeForTest(&corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"v": []byte(fmt.Sprint(i))}})
		if err != nil {
			t.Fatal(err)
		}
		if name != "plain" {
			if v, err = tr.TransformToStorage(ctx, v, value.DefaultContext(k)); err != nil {
				t.Fatal(err)
			}
		}
		put(k, v)
		put(k, v) // a second revision of the same key
	}
	put("/kubernetes.io/config.openshift.io/clusterversions/version", []byte("{}"))
	put("/kubernetes.io/hcpsnap-fill/00000001", []byte("x"))
	out := filepath.Join(dir, "snap.db")
	if b, err := exec.Command(filepath.Join(bin, "etcdctl"), "--endpoints", cu, "snapshot", "save", out).CombinedOutput(); err != nil {
		t.Fatalf("etcdctl snapshot save: %v\n%s", err, b)
	}
	b, err := exec.Command(filepath.Join(bin, "etcdutl"), "snapshot", "status", "-w", "json", out).Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v", err)
	}
	var st snapStatus
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status %s: %v", b, err)
	}
	st.liveKeys = 2 + 4 + 2
	snap, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd %s: revision %d, totalKey %d, storage version %q", bin, st.Revision, st.TotalKey, st.Version)
	return snap, st
}
