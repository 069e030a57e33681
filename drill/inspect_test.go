package drill

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// sliceReader serves KVs from memory, in key order, as etcd would.
type sliceReader struct{ kvs []KV }

func (r *sliceReader) Range(_ context.Context, prefix string, withValues bool, fn func(KV) error) error {
	sort.Slice(r.kvs, func(i, j int) bool { return string(r.kvs[i].Key) < string(r.kvs[j].Key) })
	for _, kv := range r.kvs {
		if !strings.HasPrefix(string(kv.Key), prefix) {
			continue
		}
		if !withValues {
			kv.Value = nil
		}
		if err := fn(kv); err != nil {
			return err
		}
	}
	return nil
}

func TestInspect(t *testing.T) {
	kv := func(k string, v []byte) KV { return KV{Key: []byte(k), Value: v} }
	r := &sliceReader{kvs: []KV{
		kv("/kubernetes.io/namespaces/default", []byte("k8s\x00")),
		kv("/kubernetes.io/namespaces/openshift-etcd", []byte("k8s\x00")),
		kv("/kubernetes.io/pods/default/a", []byte("k8s\x00")),
		kv("/kubernetes.io/pods/default/b", []byte("k8s\x00")),
		kv("/kubernetes.io/config.openshift.io/clusterversions/version", []byte("{}")),
		kv("/kubernetes.io/apiregistration.k8s.io/apiservices/v1.apps", []byte("{}")),
		kv("/kubernetes.io/masterleases/10.0.0.1", []byte("{}")),
		kv("/openshift.io/routes/default/r", []byte("{}")),
		kv("compact_rev_key", []byte("x")),
		kv("/kubernetes.io/secrets/default/ok", storedSecret(t, testKeyA, "key1", "default", "ok")),
		kv("/kubernetes.io/secrets/default/other-key", storedSecret(t, testKeyB, "key1", "default", "other-key")),
		kv("/kubernetes.io/secrets/default/plain", storedSecret(t, nil, "", "default", "plain")),
		kv("/kubernetes.io/secrets/default/kms", []byte("k8s:enc:kms:v2:awskms-1:\x0a")),
	}}
	c, err := inspect(context.Background(), r, []namedKey{{manifest.RoleActiveKey, testKeyA}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Keys != 13 {
		t.Errorf("keys = %d, want 13", c.Keys)
	}
	want := map[string]int64{"namespaces": 2, "pods": 2, "config.openshift.io/clusterversions": 1, "apiregistration.k8s.io/apiservices": 1,
		"masterleases": 1, "/openshift.io/routes": 1, "secrets": 4}
	if !reflect.DeepEqual(c.Resources, want) {
		t.Errorf("resources = %v, want %v", c.Resources, want)
	}
	if !reflect.DeepEqual(c.Namespaces, []string{"default", "openshift-etcd"}) {
		t.Errorf("namespaces = %v", c.Namespaces)
	}
	s := c.Secrets
	if s.Total != 4 || s.AESCBC != 2 || s.Decrypted != 1 || s.Plain != 1 || s.KMS["kms/v2:awskms-1"] != 1 {
		t.Errorf("secrets = %+v", s)
	}
	if s.FirstFailure != "/kubernetes.io/secrets/default/other-key" || s.FirstPlain != "/kubernetes.io/secrets/default/plain" {
		t.Errorf("first failure %q, first plain %q", s.FirstFailure, s.FirstPlain)
	}
	ck := secretsCheck(s)
	if ck.OK || !errors.Is(ck.fail, ErrKeyMismatch) || !strings.Contains(ck.Detail, "1 of 2") || !strings.Contains(ck.Detail, "other-key") {
		t.Errorf("secrets check = %+v", ck)
	}

	// Without a key bundle the aescbc Secrets are not checked, and that fails.
	c, err = inspect(context.Background(), r, nil, "the backup has no key bundle")
	if err != nil {
		t.Fatal(err)
	}
	if ck := secretsCheck(c.Secrets); ck.OK || !strings.Contains(ck.Detail, "no key bundle") {
		t.Errorf("secrets check without a bundle = %+v", ck)
	}
	f := strings.Join(findings(c.Secrets, &manifest.Manifest{}), "\n")
	for _, w := range []string{"1 of 4 Secrets are stored without encryption", `KMS provider "awskms-1" (kms/v2)`, "cannot be checked offline"} {
		if !strings.Contains(f, w) {
			t.Errorf("findings %q lack %q", f, w)
		}
	}
}

func TestKeysCheck(t *testing.T) {
	tests := []struct {
		name string
		live int64
		etcd manifest.Etcd
		ok   bool
	}{
		{"streamed: no count", 10, manifest.Etcd{}, true},
		{"3.5 counts every bucket", 10, manifest.Etcd{TotalKeys: 30}, true},
		{"3.5 equal", 10, manifest.Etcd{TotalKeys: 10}, true},
		{"more live keys than counted", 31, manifest.Etcd{TotalKeys: 30}, false},
		{"3.6 equal", 10, manifest.Etcd{TotalKeys: 10, StorageVersion: "3.6.0"}, true},
		{"3.6 fewer", 9, manifest.Etcd{TotalKeys: 10, StorageVersion: "3.6.0"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck := keysCheck(tt.live, tt.etcd)
			if ck.OK != tt.ok || (!ck.OK && !errors.Is(ck.fail, ErrUnusable)) {
				t.Errorf("keysCheck = %+v, want ok %v", ck, tt.ok)
			}
		})
	}
}

func TestVerdictTakesTheFirstFailure(t *testing.T) {
	res := &Result{Checks: []Check{{Name: "revision", OK: true}, {Name: "keys", fail: ErrUnusable, Detail: "d1"}, {Name: "secrets", fail: ErrKeyMismatch}}}
	if err := verdict(res); !errors.Is(err, ErrUnusable) || errors.Is(err, ErrKeyMismatch) {
		t.Errorf("verdict = %v", err)
	}
	if err := verdict(&Result{Checks: []Check{{OK: true}}}); err != nil {
		t.Errorf("verdict of passing checks = %v", err)
	}
}

func TestBundleKeys(t *testing.T) {
	keys, why := bundleKeys(append(bundleWithRole(testKeyB, manifest.RoleBackupKey), bundleWithRole(testKeyA, manifest.RoleActiveKey)...), "")
	if why != "" || len(keys) != 2 || keys[0].role != manifest.RoleActiveKey {
		t.Errorf("keys = %v, %q: want the active key first", len(keys), why)
	}
	if _, why := bundleKeys(bundleWithRole(testKeyA, manifest.RoleControlPlane), ""); !strings.Contains(why, "no AES key") {
		t.Errorf("a bundle without AES keys: %q", why)
	}
	if _, why := bundleKeys(nil, "missing object"); why != "missing object" {
		t.Errorf("no bundle: %q", why)
	}
}

func TestKMSCheck(t *testing.T) {
	arn := "arn:aws:kms:us-east-1:123456789012:key/active"
	active := manifest.AWSKMSProviderName(arn)
	recorded := &manifest.Encryption{Type: manifest.EncryptionKMS, KMS: &manifest.KMS{Provider: "AWS",
		Keys: []manifest.KMSKey{{Role: manifest.KMSKeyActive, ID: arn, ProviderName: active}}}}
	tests := []struct {
		name   string
		kms    map[string]int
		enc    *manifest.Encryption
		ok     bool
		detail string
	}{
		{"the recorded active key", map[string]int{"kms/v2:" + active: 3}, recorded, true, arn},
		{"a key the manifest does not record", map[string]int{"kms/v2:" + active: 3, "kms/v2:awskmskey-1": 2}, recorded, false, "awskmskey-1 (2 Secrets)"},
		{"an aescbc manifest", map[string]int{"kms/v2:" + active: 3}, &manifest.Encryption{Type: manifest.EncryptionAESCBC}, false, "aescbc encryption does not record"},
		{"an older manifest", map[string]int{"kms/v1:" + active: 1}, nil, true, "records no encryption"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck := kmsCheck(tt.kms, tt.enc)
			if ck.OK != tt.ok || !strings.Contains(ck.Detail, tt.detail) || (!ck.OK && !errors.Is(ck.fail, ErrKeyMismatch)) {
				t.Errorf("kmsCheck = %+v, want ok %v with %q", ck, tt.ok, tt.detail)
			}
		})
	}
	if f := strings.Join(kmsFindings(map[string]int{"kms/v1:" + active: 1}, nil), ""); !strings.Contains(f, "KMS API v1") {
		t.Errorf("a v1 finding: %q", f)
	}
}
