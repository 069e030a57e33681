package manifest

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Roles of the Secrets in a key bundle, stored as an annotation on each.
const (
	RoleAnnotation = "hcpsnap.io/role"
	// RoleActiveKey is the Secret named by spec.secretEncryption.aescbc.activeKey.
	RoleActiveKey = "aescbc-active-key"
	// RoleBackupKey is the Secret named by spec.secretEncryption.aescbc.backupKey.
	RoleBackupKey = "aescbc-backup-key"
	// RoleControlPlane is a Secret of the hosted control plane namespace
	// (root-ca, etcd-signer, sa-signing-key).
	RoleControlPlane = "control-plane"
)

// NewKeyBundle returns a Kubernetes List of the Secrets, stripped of
// server-set metadata, so that it can be read by hcpsnap restore and, in an
// emergency, applied with kubectl.
func NewKeyBundle(secrets []corev1.Secret) *corev1.List {
	list := &corev1.List{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "List"}}
	for _, s := range secrets {
		clean := corev1.Secret{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{
				Name: s.Name, Namespace: s.Namespace,
				Labels: s.Labels, Annotations: s.Annotations,
			},
			Type: s.Type,
			Data: s.Data,
		}
		raw, _ := json.Marshal(clean)
		list.Items = append(list.Items, runtime.RawExtension{Raw: raw})
	}
	return list
}

// DecodeKeyBundle reads the Secrets of a key bundle.
func DecodeKeyBundle(data []byte) ([]corev1.Secret, error) {
	var list struct {
		Kind  string          `json:"kind"`
		Items []corev1.Secret `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("not an hcpsnap key bundle: %w", err)
	}
	if list.Kind != "List" {
		return nil, fmt.Errorf("not an hcpsnap key bundle: kind %q, want List", list.Kind)
	}
	for _, s := range list.Items {
		if s.Kind != "Secret" {
			return nil, fmt.Errorf("key bundle holds a %q, want only Secrets", s.Kind)
		}
	}
	return list.Items, nil
}
