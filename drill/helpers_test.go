package drill

import (
	"bytes"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// encodeForTest encodes obj as kube-apiserver stores it.
func encodeForTest(obj runtime.Object) ([]byte, error) {
	var buf bytes.Buffer
	err := secretCodec.Encode(obj, &buf)
	return buf.Bytes(), err
}

func bundleWithRole(key []byte, role string) []corev1.Secret {
	return []corev1.Secret{{
		ObjectMeta: metav1.ObjectMeta{Name: "k-" + role, Namespace: "clusters", Annotations: map[string]string{manifest.RoleAnnotation: role}},
		Data:       map[string][]byte{"key": key},
	}}
}
