package drill

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// Prefixes of the values kube-apiserver stores in etcd. An encrypted value
// starts with "k8s:enc:<provider>:<version>:<name>:" (the prefix transformer
// of k8s.io/apiserver's encryption config); a value written without
// encryption is the protobuf envelope, "k8s\x00", or JSON.
const (
	aescbcPrefix   = "k8s:enc:aescbc:v1:"
	kmsV1Prefix    = "k8s:enc:kms:v1:"
	kmsV2Prefix    = "k8s:enc:kms:v2:"
	encPrefix      = "k8s:enc:"
	protobufPrefix = "k8s\x00"
)

// Storage is how one stored value is kept.
type Storage int

// The kinds of stored value the drill tells apart.
const (
	StoredPlain   Storage = iota // protobuf or JSON, not encrypted
	StoredAESCBC                 // aescbc, checked with the key bundle
	StoredKMS                    // KMS v1 or v2 envelope: needs the KMS, not checked offline
	StoredUnknown                // another provider (aesgcm, secretbox, ...): not checked
)

// Envelope is what the prefix of a stored value says about its encryption.
type Envelope struct {
	Storage Storage
	// Provider is "aescbc", "kms/v1", "kms/v2", or the unknown provider's
	// name; empty for plain values.
	Provider string
	// KeyName is the aescbc key's or the KMS provider's name in the
	// encryption configuration that wrote the value.
	KeyName string
	// payload follows the prefix (IV and ciphertext for aescbc).
	payload []byte
}

// ParseEnvelope reads the prefix of a value stored by kube-apiserver.
func ParseEnvelope(v []byte) Envelope {
	s := v
	switch {
	case bytes.HasPrefix(s, []byte(aescbcPrefix)):
		name, rest, ok := bytes.Cut(s[len(aescbcPrefix):], []byte(":"))
		if !ok {
			return Envelope{Storage: StoredUnknown, Provider: "aescbc"}
		}
		return Envelope{Storage: StoredAESCBC, Provider: "aescbc", KeyName: string(name), payload: rest}
	case bytes.HasPrefix(s, []byte(kmsV1Prefix)), bytes.HasPrefix(s, []byte(kmsV2Prefix)):
		version := "kms/v1"
		if bytes.HasPrefix(s, []byte(kmsV2Prefix)) {
			version = "kms/v2"
		}
		name, _, _ := bytes.Cut(s[len(kmsV1Prefix):], []byte(":"))
		return Envelope{Storage: StoredKMS, Provider: version, KeyName: string(name)}
	case bytes.HasPrefix(s, []byte(encPrefix)):
		provider, _, _ := strings.Cut(string(s[len(encPrefix):min(len(s), len(encPrefix)+32)]), ":")
		return Envelope{Storage: StoredUnknown, Provider: provider}
	}
	return Envelope{Storage: StoredPlain}
}

// errNoKey is returned when no key of the bundle decrypts a value.
var errNoKey = errors.New("no key of the key bundle decrypts it")

// decryptAESCBC undoes kube-apiserver's aescbc transformer: a random IV of
// one block, then AES-CBC of the value padded with PKCS#7. A wrong key shows
// as bad padding or, rarely, as padding that happens to be valid over
// garbage; the caller decodes the result to tell those apart.
func decryptAESCBC(key, payload []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("the key is not an AES key (%d bytes)", len(key))
	}
	bs := block.BlockSize()
	if len(payload) < 2*bs || len(payload)%bs != 0 {
		return nil, fmt.Errorf("the stored value is not IV plus whole AES blocks (%d bytes)", len(payload))
	}
	iv, data := payload[:bs], payload[bs:]
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, data)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > bs {
		return nil, errNoKey
	}
	for _, b := range out[len(out)-pad:] {
		if int(b) != pad {
			return nil, errNoKey
		}
	}
	return out[:len(out)-pad], nil
}

// secretCodec decodes Secrets with kube-apiserver's storage serializer,
// Kubernetes protobuf.
var secretCodec = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

// decodeSecret decodes a plaintext stored value as a Secret.
func decodeSecret(plain []byte) (*corev1.Secret, error) {
	obj, _, err := secretCodec.Decode(plain, nil, nil)
	if err != nil {
		return nil, errors.New("it does not decode as a Kubernetes protobuf object")
	}
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return nil, fmt.Errorf("it decodes as a %T, not a Secret", obj)
	}
	return s, nil
}

// openSecret decrypts an aescbc value with the first key that yields a
// Secret named as its etcd key says, and returns which key did.
func openSecret(env Envelope, keys []namedKey, namespace, name string) (string, error) {
	var last error = errNoKey
	for _, k := range keys {
		plain, err := decryptAESCBC(k.key, env.payload)
		if err != nil {
			last = err
			continue
		}
		s, err := decodeSecret(plain)
		if err != nil {
			last = err
			continue
		}
		if s.Name != name || s.Namespace != namespace {
			last = errors.New("it decrypts to a Secret of another name")
			continue
		}
		return k.role, nil
	}
	return "", last
}

// namedKey is an AES key of the bundle with its role (active or backup);
// the key itself never leaves this package.
type namedKey struct {
	role string
	key  []byte
}

var _ runtime.Decoder = secretCodec
