package drill

import (
	"context"
	"crypto/aes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"
)

var (
	testKeyA = []byte("0123456789abcdef0123456789abcdef")
	testKeyB = []byte("fedcba9876543210fedcba9876543210")
)

// storedSecret encodes a Secret and encrypts it with kube-apiserver's own
// aescbc transformer (k8s.io/apiserver), so that the decoder is checked
// against the code that writes what it reads.
func storedSecret(t *testing.T, key []byte, keyName, namespace, name string) []byte {
	t.Helper()
	plain, err := encodeForTest(&corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Data: map[string][]byte{"password": []byte("hunter2")}})
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		return plain
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	tr := value.NewPrefixTransformers(nil, value.PrefixTransformer{Prefix: []byte("k8s:enc:aescbc:v1:" + keyName + ":"), Transformer: aestransformer.NewCBCTransformer(block)})
	etcdKey := "/kubernetes.io/secrets/" + namespace + "/" + name
	out, err := tr.TransformToStorage(context.Background(), plain, value.DefaultContext(etcdKey))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpenSecretAgainstKubeAPIServerTransformer(t *testing.T) {
	v := storedSecret(t, testKeyA, "key1", "ns", "s1")
	env := ParseEnvelope(v)
	if env.Storage != StoredAESCBC || env.KeyName != "key1" {
		t.Fatalf("envelope = %+v", env)
	}
	tests := []struct {
		name     string
		keys     []namedKey
		ns, obj  string
		wantRole string
		wantErr  string
	}{
		{"the right key", []namedKey{{"aescbc-active-key", testKeyA}}, "ns", "s1", "aescbc-active-key", ""},
		{"the backup key opens it", []namedKey{{"aescbc-active-key", testKeyB}, {"aescbc-backup-key", testKeyA}}, "ns", "s1", "aescbc-backup-key", ""},
		{"another key", []namedKey{{"aescbc-active-key", testKeyB}}, "ns", "s1", "", "no key"},
		{"a short key", []namedKey{{"aescbc-active-key", []byte("short")}}, "ns", "s1", "", "not an AES key"},
		{"a value moved to another name", []namedKey{{"aescbc-active-key", testKeyA}}, "ns", "s2", "", "another name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role, err := openSecret(env, tt.keys, tt.ns, tt.obj)
			if tt.wantErr == "" && (err != nil || role != tt.wantRole) {
				t.Fatalf("openSecret = %q, %v; want %q", role, err, tt.wantRole)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("openSecret error = %v, want one containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Fatal("the error holds the Secret's value")
			}
		})
	}
}

func TestDecryptRefusesMalformedPayloads(t *testing.T) {
	for _, p := range [][]byte{nil, make([]byte, 16), make([]byte, 33)} {
		if _, err := decryptAESCBC(testKeyA, p); err == nil {
			t.Errorf("decryptAESCBC(%d bytes) succeeded", len(p))
		}
	}
}

func TestParseEnvelope(t *testing.T) {
	tests := []struct {
		in       string
		storage  Storage
		provider string
		name     string
	}{
		{"k8s\x00\x0a\x0cv1", StoredPlain, "", ""},
		{`{"kind":"Secret"}`, StoredPlain, "", ""},
		{"k8s:enc:aescbc:v1:key1:xxxxxxxx", StoredAESCBC, "aescbc", "key1"},
		{"k8s:enc:aescbc:v1:nocolon", StoredUnknown, "aescbc", ""},
		{"k8s:enc:kms:v1:awskms-arn:aws:kms:abc:\x00\x01", StoredKMS, "kms/v1", "awskms-arn"},
		{"k8s:enc:kms:v2:provider-1:\x0a\x10", StoredKMS, "kms/v2", "provider-1"},
		{"k8s:enc:secretbox:v1:k:zz", StoredUnknown, "secretbox", ""},
	}
	for _, tt := range tests {
		env := ParseEnvelope([]byte(tt.in))
		if env.Storage != tt.storage || env.Provider != tt.provider || env.KeyName != tt.name {
			t.Errorf("ParseEnvelope(%q) = %d %q %q, want %d %q %q", tt.in, env.Storage, env.Provider, env.KeyName, tt.storage, tt.provider, tt.name)
		}
	}
}
