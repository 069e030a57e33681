package drill

import (
	"bytes"

	"k8s.io/apimachinery/pkg/runtime"
)

// encodeForTest encodes obj as kube-apiserver stores it.
func encodeForTest(obj runtime.Object) ([]byte, error) {
	var buf bytes.Buffer
	err := secretCodec.Encode(obj, &buf)
	return buf.Bytes(), err
}
