package manifest

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// FuzzDecode feeds both readers of what a backup leaves in the bucket,
// Decode (the manifest) and DecodeKeyBundle (the key bundle), arbitrary
// objects: anyone who can write to the bucket can write them. Neither may
// panic, their errors must be one line, and what they accept must come back
// the same after being written again (json.Marshal for a manifest,
// NewKeyBundle for the Secrets of a bundle).
func FuzzDecode(f *testing.F) {
	// testdata/fuzz/FuzzDecode holds a manifest and a key bundle as the
	// backup writes them, a manifest of a newer schema, a truncated bundle
	// and one edited by hand. These are the corners.
	for _, seed := range []string{
		`{"schemaVersion":1,"snapshot":{"key":"k"},"times":{"started":"2025-01-01T00:00:00.5+01:00","uploaded":null},"downtimeSeconds":-0}`,
		`{"kind":"List","items":[{"kind":"Secret","data":{"key":"not base64"}}]}`,
		`{"kind":"List","items":[{"kind":"Secret","data":{"a":"","b":null},"stringData":{"c":"d"}}]}`,
		`{"kind":"List","items":null}`,
		`{"kind":"Secret"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := Decode(data); err != nil {
			assertOneLine(t, "Decode", err)
		} else {
			again, err := json.Marshal(m)
			if err != nil {
				t.Fatalf("a decoded manifest does not encode: %v", err)
			}
			m2, err := Decode(again)
			if err != nil {
				t.Fatalf("a decoded and encoded manifest does not decode: %v\n%s", err, again)
			}
			// Compare encodings, not values: a time read with "+00:00" and the
			// same instant read back with "Z" differ only in their *Location.
			again2, err := json.Marshal(m2)
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(again2) {
				t.Fatalf("the manifest changed in a round trip:\n%s\n%s", again, again2)
			}
		}

		secrets, err := DecodeKeyBundle(data)
		if err != nil {
			assertOneLine(t, "DecodeKeyBundle", err)
			return
		}
		again, err := json.Marshal(NewKeyBundle(secrets))
		if err != nil {
			t.Fatalf("the Secrets of a decoded key bundle do not encode: %v", err)
		}
		secrets2, err := DecodeKeyBundle(again)
		if err != nil {
			t.Fatalf("a decoded and encoded key bundle does not decode: %v\n%s", err, again)
		}
		if len(secrets) != len(secrets2) {
			t.Fatalf("the key bundle has %d Secrets after a round trip, %d before", len(secrets2), len(secrets))
		}
		for i := range secrets {
			if a, b := secrets[i], secrets2[i]; !sameSecret(a, b) {
				t.Fatalf("Secret %d changed in a round trip:\n%+v\n%+v", i, a, b)
			}
		}
	})
}

// sameSecret compares what NewKeyBundle keeps of a Secret; a nil and an
// empty map or value are the same to Kubernetes.
func sameSecret(a, b corev1.Secret) bool {
	return a.Name == b.Name && a.Namespace == b.Namespace && a.Type == b.Type &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations) &&
		maps.EqualFunc(a.Data, b.Data, bytes.Equal)
}

func assertOneLine(t *testing.T, what string, err error) {
	t.Helper()
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("%s error is not one line: %q", what, err)
	}
}
