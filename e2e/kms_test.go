//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// The KMS renders: the same keys as the KMS variant, and one that dropped
// the variant's backup key.
const (
	kmsRenderFile      = "testdata/render-none-kms.yaml"
	kmsOtherRenderFile = "testdata/render-none-kms-other-key.yaml"
)

// kmsDataPrefix is where the test writes KMS envelopes into the hosted etcd:
// Secrets of a namespace of their own, removed afterwards.
const kmsDataPrefix = "/kubernetes.io/secrets/hcpsnap-kms-e2e/"

// Known vectors: the kube-apiserver provider names HyperShift gives the
// variant's keys ("awskmskey-" and the decimal FNV-1 32-bit hash of the ARN),
// computed outside Go.
const (
	kmsActiveProviderName = "awskmskey-115996158"
	kmsBackupProviderName = "awskmskey-3149724486"
)

// TestKMSBackupAndRestore turns the environment's HostedCluster into the KMS
// variant (spec.secretEncryption.type kms with AWS keys; the API server
// validates it against HyperShift's CRD), backs it up, and restores it into
// KMS and aescbc renders: the manifest records the KMS keys and nothing
// secret, a render naming the same keys restores with no AES key added, and
// a render missing a key or asking for aescbc is refused with one line.
func TestKMSBackupAndRestore(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	env.useKMSVariant(t)
	envelopes := env.writeKMSEnvelopes(t, 3)

	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--prefix", "kms")
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	record(res.stdout, res.stderr)
	if strings.Contains(res.stderr, "no aescbc secretEncryption") || !strings.Contains(res.stderr, "encrypts Secrets with KMS") {
		t.Errorf("backup log does not say the cluster uses KMS, or warns of a missing AES key:\n%s", res.stderr)
	}
	sum := lastSummary(t, res.stdout)
	m := env.readManifest(t, sum.Manifest)

	// The manifest's KMS section, checked against the known provider names.
	e := m.Encryption
	if e == nil || e.Type != manifest.EncryptionKMS || e.KMS == nil {
		t.Fatalf("manifest encryption %+v, want kms", e)
	}
	wantKeys := []manifest.KMSKey{
		{Role: manifest.KMSKeyActive, ID: fixture.KMSActiveKeyARN, ProviderName: kmsActiveProviderName},
		{Role: manifest.KMSKeyBackup, ID: fixture.KMSBackupKeyARN, ProviderName: kmsBackupProviderName},
	}
	if e.KMS.Provider != "AWS" || e.KMS.Region != fixture.KMSRegion || fmt.Sprint(e.KMS.Keys) != fmt.Sprint(wantKeys) ||
		fmt.Sprint(e.KMS.Roles) != fmt.Sprint([]string{fixture.KMSRoleARN}) {
		t.Errorf("manifest kms %+v, want AWS %s keys %+v role %s", e.KMS, fixture.KMSRegion, wantKeys, fixture.KMSRoleARN)
	}
	// The key bundle holds the control plane Secrets and no AES key.
	for _, s := range m.KeyBundle.Secrets {
		if strings.Contains(s, "encryption-key") {
			t.Errorf("the key bundle of a KMS cluster holds %s", s)
		}
	}
	if len(m.KeyBundle.Secrets) == 0 {
		t.Error("the key bundle of a KMS cluster holds no control plane Secret")
	}
	raw := string(env.get(t, sum.Manifest))
	live, err := env.kube.CoreV1().Secrets(env.namespace).Get(ctx, env.cluster+"-etcd-encryption-key", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(raw, string(live.Data["key"])) {
		t.Error("the manifest holds the AES key")
	}

	// A render naming the same keys: restoreSnapshotURL set, KMS kept, no AES key.
	out := filepath.Join(t.TempDir(), "cluster.yaml")
	res = env.hcpsnap(t, t.TempDir(), "-o", "json", "restore", "--from", sum.Manifest, "-f", kmsRenderFile, "--out", out, "--server-dry-run")
	record(res.stdout, res.stderr)
	if res.code != 0 {
		t.Fatalf("restore of a KMS render: exit %d:\n%s", res.code, res.stderr)
	}
	hc, secrets := readResult(t, out)
	urls := hc.Spec.Etcd.Managed.Storage.RestoreSnapshotURL
	if len(urls) != 1 {
		t.Fatalf("restoreSnapshotURL has %d entries, want 1", len(urls))
	}
	se := hc.Spec.SecretEncryption
	if se == nil || se.Type != "kms" || se.KMS == nil || se.KMS.AWS == nil || se.KMS.AWS.ActiveKey.ARN != fixture.KMSActiveKeyARN ||
		se.KMS.AWS.BackupKey == nil || se.KMS.AWS.BackupKey.ARN != fixture.KMSBackupKeyARN || se.KMS.AWS.Auth.AWSKMSRoleARN != fixture.KMSRoleARN || se.AESCBC != nil {
		t.Errorf("the result's secretEncryption changed: %+v", se)
	}
	for ref, s := range secrets {
		if strings.Contains(ref, "encryption-key") {
			t.Errorf("the result holds the Secret %s", ref)
		}
		for _, v := range s.Data {
			if bytes.Equal(v, live.Data["key"]) {
				t.Errorf("the result's Secret %s holds the source's AES key", ref)
			}
		}
	}
	var event struct {
		Encryption  string
		KMSProvider string
		KMSKeys     []string
	}
	if err := json.Unmarshal([]byte(lastLine(res.stdout)), &event); err != nil || event.Encryption != "kms" ||
		fmt.Sprint(event.KMSKeys) != fmt.Sprint([]string{fixture.KMSActiveKeyARN, fixture.KMSBackupKeyARN}) {
		t.Errorf("restore event %q (%v): want encryption kms naming both keys", lastLine(res.stdout), err)
	}

	// What etcd-init restores from that URL holds the envelopes, and they
	// name the provider of the key the manifest records as active.
	snap := filepath.Join(t.TempDir(), "snapshot.db")
	download(t, urls[0], snap)
	restored := startRestoredEtcd(t, env, snap)
	got, err := restored.Get(ctx, kmsDataPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != len(envelopes) {
		t.Fatalf("restored etcd holds %d values under %s, want %d", len(got.Kvs), kmsDataPrefix, len(envelopes))
	}
	for _, kv := range got.Kvs {
		if !bytes.Equal(kv.Value, envelopes[string(kv.Key)]) || !bytes.HasPrefix(kv.Value, []byte("k8s:enc:kms:v2:"+e.KMS.ActiveKey().ProviderName+":")) {
			t.Errorf("restored value of %s does not name the manifest's active key provider %s", kv.Key, e.KMS.ActiveKey().ProviderName)
		}
	}

	// Refusals: one line with exit code 2, the output file left as it was.
	for _, tt := range []struct {
		name, render string
		want         []string
	}{
		{"render missing the backup key", kmsOtherRenderFile,
			[]string{"does not name AWS KMS key " + fixture.KMSBackupKeyARN, "kms.aws.backupKey.arn"}},
		{"aescbc render", renderFile,
			[]string{"spec.secretEncryption.type is aescbc", "encrypted with AWS KMS key " + fixture.KMSActiveKeyARN, "set spec.secretEncryption.type: kms"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "cluster.yaml")
			const before = "left by an earlier run\n"
			if err := os.WriteFile(out, []byte(before), 0o600); err != nil {
				t.Fatal(err)
			}
			res := env.hcpsnap(t, t.TempDir(), "restore", "--from", sum.Manifest, "-f", tt.render, "--out", out)
			record(res.stdout, res.stderr)
			if exitcode.Code(res.code) != exitcode.Usage {
				t.Fatalf("exit %d, want %d:\n%s", res.code, exitcode.Usage, res.stderr)
			}
			last := lastLine(res.stderr)
			if !strings.HasPrefix(last, "hcpsnap: ") {
				t.Errorf("last line %q is not hcpsnap's one-line error", last)
			}
			for _, w := range tt.want {
				if !strings.Contains(last, w) {
					t.Errorf("error %q does not contain %q", last, w)
				}
			}
			if strings.Contains(res.stderr, "X-Amz-Signature") {
				t.Error("the presigned URL appears in the logs")
			}
			if b, err := os.ReadFile(out); err != nil || string(b) != before {
				t.Errorf("the output file changed: %q, %v", b, err)
			}
		})
	}
}

// useKMSVariant patches the HostedCluster's spec.secretEncryption to the KMS
// variant, and back to what it was when the test ends. Patching the one
// running HostedCluster (rather than starting an environment with a second,
// KMS one) keeps the variant to the API objects, needs no restart of the
// shared environment, and leaves the fixture every other test uses as it is.
func (e *testEnv) useKMSVariant(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	hc, err := e.hyper.GetHostedCluster(ctx, e.namespace, e.cluster)
	if err != nil {
		t.Fatal(err)
	}
	orig := hc.Spec.SecretEncryption
	if orig == nil || orig.Type != "aescbc" {
		t.Fatalf("the environment's HostedCluster has secretEncryption %+v, want the fixture's aescbc", orig)
	}
	patch := func(v any) []byte {
		b, err := json.Marshal(map[string]any{"spec": map[string]any{"secretEncryption": v}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	kms := fixture.KMSSecretEncryption()
	if _, err := e.hyper.PatchHostedCluster(ctx, e.namespace, e.cluster, patch(map[string]any{"type": kms.Type, "kms": kms.KMS, "aescbc": nil})); err != nil {
		t.Fatalf("the KMS variant of the HostedCluster: %v", err)
	}
	t.Cleanup(func() {
		if _, err := e.hyper.PatchHostedCluster(ctx, e.namespace, e.cluster, patch(map[string]any{"type": orig.Type, "aescbc": orig.AESCBC, "kms": nil})); err != nil {
			t.Errorf("put back the HostedCluster's aescbc secretEncryption: %v", err)
		}
	})
}

// writeKMSEnvelopes puts n Secrets encrypted by the KMS variant's active key
// into the hosted etcd (envelopes with opaque ciphertext: see
// fixture.KMSEnvelope), and removes them when the test ends.
func (e *testEnv) writeKMSEnvelopes(t *testing.T, n int) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	cli, err := fixture.EtcdClient(e.FixtureConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := cli.Delete(ctx, kmsDataPrefix, clientv3.WithPrefix()); err != nil {
			t.Errorf("remove the KMS envelopes: %v", err)
		}
		cli.Close()
	})
	out := map[string][]byte{}
	for i := range n {
		opaque := make([]byte, 64)
		_, _ = rand.Read(opaque)
		key := fmt.Sprintf("%ssecret-%d", kmsDataPrefix, i)
		val := fixture.KMSEnvelope(kmsActiveProviderName, opaque)
		if _, err := cli.Put(ctx, key, string(val)); err != nil {
			t.Fatal(err)
		}
		out[key] = val
	}
	return out
}
