package drill

import (
	"context"
	"sort"
	"strings"
)

// KV is one key of the restored etcd, with its value when asked for.
type KV struct {
	Key, Value []byte
}

// Reader is what the inspection needs of the restored etcd: every key
// under a prefix in key order, page by page, at the current revision.
type Reader interface {
	// Range calls fn for every key with prefix ("" for all keys), with
	// values only when withValues is set.
	Range(ctx context.Context, prefix string, withValues bool, fn func(KV) error) error
}

// kubePrefix is the etcd prefix HyperShift's kube-apiserver stores objects
// under (--etcd-prefix=kubernetes.io).
const kubePrefix = "/kubernetes.io/"

// Contents is what the restored etcd holds.
type Contents struct {
	// Keys counts the live keys.
	Keys int64 `json:"keys"`
	// Resources counts objects per resource: "pods" for
	// /kubernetes.io/pods/..., "<group>/<resource>" for a group-qualified
	// key (/kubernetes.io/config.openshift.io/clusterversions/...), and
	// "/<prefix>/<resource>" for keys outside /kubernetes.io/.
	Resources map[string]int64 `json:"resources"`
	// Namespaces are the names under /kubernetes.io/namespaces/, sorted.
	Namespaces []string `json:"namespaces"`
	Secrets    Secrets  `json:"secrets"`
}

// Secrets is how the stored Secrets are kept, and whether the key bundle
// opens the encrypted ones. It never holds a value or a key.
type Secrets struct {
	Total int `json:"total"`
	// AESCBC counts the aescbc-encrypted Secrets, Decrypted those the key
	// bundle decrypted into a Secret of the key's name.
	AESCBC    int `json:"aescbc"`
	Decrypted int `json:"decrypted"`
	// AESCBCKeyNames are the key names the aescbc envelopes carry.
	AESCBCKeyNames []string `json:"aescbcKeyNames,omitempty"`
	// DecryptedBy counts the decrypted Secrets by the role of the key
	// (aescbc-active-key, aescbc-backup-key) that opened them.
	DecryptedBy map[string]int `json:"decryptedBy,omitempty"`
	// FirstFailure is the etcd key of the first aescbc Secret that no key
	// decrypted, and FailureReason why (never the value).
	FirstFailure  string `json:"firstFailure,omitempty"`
	FailureReason string `json:"failureReason,omitempty"`
	// Unchecked says why the aescbc Secrets were not tried (no key bundle).
	Unchecked string `json:"unchecked,omitempty"`
	// KMS counts the KMS-encrypted Secrets per "kms/v1:<provider>" or
	// "kms/v2:<provider>": they need the KMS and are not checked offline.
	KMS map[string]int `json:"kms,omitempty"`
	// Plain counts Secrets stored without encryption; FirstPlain names one.
	Plain      int    `json:"plain"`
	FirstPlain string `json:"firstPlain,omitempty"`
	// Unknown counts Secrets of another encryption provider, by provider.
	Unknown map[string]int `json:"unknown,omitempty"`
}

// inspect reads the restored etcd. keys are the AES keys of the bundle; nil
// with unchecked set when there is no usable bundle.
func inspect(ctx context.Context, r Reader, keys []namedKey, unchecked string) (*Contents, error) {
	c := &Contents{Resources: map[string]int64{}}
	err := r.Range(ctx, "", false, func(kv KV) error {
		c.Keys++
		k := string(kv.Key)
		if res := resourceOf(k); res != "" {
			c.Resources[res]++
		}
		if name, ok := strings.CutPrefix(k, kubePrefix+"namespaces/"); ok && name != "" && !strings.Contains(name, "/") {
			c.Namespaces = append(c.Namespaces, name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(c.Namespaces)
	c.Secrets, err = checkSecrets(ctx, r, keys, unchecked)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// resourceOf names the resource of an object's etcd key, "" for a key that
// is not an object's (the apiserver's own bookkeeping keys are objects too,
// e.g. /kubernetes.io/masterleases/<ip>).
func resourceOf(key string) string {
	if !strings.HasPrefix(key, "/") {
		return ""
	}
	parts := strings.Split(key[1:], "/")
	if len(parts) < 3 || parts[1] == "" {
		return ""
	}
	if parts[0] != strings.Trim(kubePrefix, "/") {
		return "/" + parts[0] + "/" + parts[1]
	}
	// A group-qualified resource: /kubernetes.io/<group>/<resource>/...;
	// groups hold a dot, core and built-in resource names never do.
	if strings.Contains(parts[1], ".") && len(parts) >= 4 {
		return parts[1] + "/" + parts[2]
	}
	return parts[1]
}

// checkSecrets sorts the Secrets by how they are stored and decrypts every
// aescbc one with the bundle's keys.
func checkSecrets(ctx context.Context, r Reader, keys []namedKey, unchecked string) (Secrets, error) {
	s := Secrets{DecryptedBy: map[string]int{}, KMS: map[string]int{}, Unknown: map[string]int{}}
	names := map[string]bool{}
	err := r.Range(ctx, kubePrefix+"secrets/", true, func(kv KV) error {
		s.Total++
		key := string(kv.Key)
		env := ParseEnvelope(kv.Value)
		switch env.Storage {
		case StoredPlain:
			s.Plain++
			if s.FirstPlain == "" {
				s.FirstPlain = key
			}
		case StoredKMS:
			s.KMS[env.Provider+":"+env.KeyName]++
		case StoredUnknown:
			s.Unknown[env.Provider]++
		case StoredAESCBC:
			s.AESCBC++
			names[env.KeyName] = true
			if len(keys) == 0 {
				return nil
			}
			ns, name := secretName(key)
			role, err := openSecret(env, keys, ns, name)
			if err != nil {
				if s.FirstFailure == "" {
					s.FirstFailure, s.FailureReason = key, err.Error()
				}
				return nil
			}
			s.Decrypted++
			s.DecryptedBy[role]++
		}
		return nil
	})
	if err != nil {
		return s, err
	}
	if s.AESCBC > 0 && len(keys) == 0 {
		s.Unchecked = unchecked
	}
	for n := range names {
		s.AESCBCKeyNames = append(s.AESCBCKeyNames, n)
	}
	sort.Strings(s.AESCBCKeyNames)
	return s, nil
}

// secretName splits /kubernetes.io/secrets/<namespace>/<name>.
func secretName(key string) (namespace, name string) {
	rest := strings.TrimPrefix(key, kubePrefix+"secrets/")
	namespace, name, _ = strings.Cut(rest, "/")
	return namespace, name
}
