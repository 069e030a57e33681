package restore

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// The fixtures: a render as `hypershift create cluster aws --render` writes
// it (objects serialized with sorted keys, "---" between them), with
// comments a user might add, and a key bundle as the backup writes it.

var (
	// testURL is a presigned URL of the shape S3 issues.
	testURL = "https://hcpsnap-backups.s3.us-east-1.amazonaws.com/example/20250101T000000Z/snapshot.db" +
		"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request" +
		"&X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host" +
		"&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
	// testKey is the backed-up AES-256 key; renderKey the fresh one the
	// hypershift CLI rendered.
	testKey   = sum("hcpsnap test active key")
	backupKey = sum("hcpsnap test backup key")
	renderKey = sum("key rendered by the hypershift CLI")
)

func sum(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// The documents of the render, in order.
const (
	docHeader = `# Rendered with: hypershift create cluster aws --name example --render
# Reviewed by the platform team before apply.
`
	docNamespace = `apiVersion: v1
kind: Namespace
metadata:
  creationTimestamp: null
  name: clusters
spec: {}
status: {}
`
	docPullSecret = `apiVersion: v1
data:
  # the pull secret from console.redhat.com
  .dockerconfigjson: eyJhdXRocyI6eyJxdWF5LmlvIjp7ImF1dGgiOiJkR1Z6ZERwMFpYTjAifX19
kind: Secret
metadata:
  creationTimestamp: null
  labels:
    hypershift.openshift.io/safe-to-delete-with-cluster: "true"
  name: example-pull-secret
  namespace: clusters
`
	docSSHKey = `apiVersion: v1
data:
  id_rsa.pub: c3NoLWVkMjU1MTkgQUFBQUMzTnphQzFsWkRJMU5URTVBQUFBSUVYQU1QTEUgdXNlckBleGFtcGxl
kind: Secret
metadata:
  creationTimestamp: null
  labels:
    hypershift.openshift.io/safe-to-delete-with-cluster: "true"
  name: example-ssh-key
  namespace: clusters
`
	docHostedCluster = `apiVersion: hypershift.openshift.io/v1beta1
kind: HostedCluster
metadata:
  creationTimestamp: null
  name: example
  namespace: clusters
spec:
  autoscaling: {}
  configuration: {}
  controllerAvailabilityPolicy: SingleReplica
  dns:
    baseDomain: example.com
  # etcd keeps its data on gp3 volumes
  etcd:
    managed:
      storage:
        persistentVolume:
          size: 8Gi
          storageClassName: gp3-csi
        type: PersistentVolume
    managementType: Managed
  fips: false
  infraID: example-x7k2p
  networking:
    clusterNetwork:
    - cidr: 10.132.0.0/14
    machineNetwork:
    - cidr: 10.0.0.0/16
    networkType: OVNKubernetes
    serviceNetwork:
    - cidr: 172.31.0.0/16
  olmCatalogPlacement: management
  platform:
    aws:
      endpointAccess: Public
      region: us-east-1
    type: AWS
  pullSecret:
    name: example-pull-secret
  release:
    image: quay.io/openshift-release-dev/ocp-release:4.17.3-multi # pinned to the backed-up version
  secretEncryption:
    aescbc:
      activeKey:
        name: example-etcd-encryption-key
    type: aescbc
  services:
  - service: APIServer
    servicePublishingStrategy:
      type: LoadBalancer
  - service: OAuthServer
    servicePublishingStrategy:
      type: Route
  sshKey:
    name: example-ssh-key
status:
  controlPlaneEndpoint:
    host: ""
    port: 0
`
	docNodePool = `apiVersion: hypershift.openshift.io/v1beta1
kind: NodePool
metadata:
  creationTimestamp: null
  name: example-us-east-1a
  namespace: clusters
spec:
  arch: amd64
  clusterName: example
  management:
    autoRepair: false
    upgradeType: Replace
  platform:
    aws:
      instanceType: m6i.xlarge
      rootVolume:
        size: 120
        type: gp3
    type: AWS
  release:
    image: quay.io/openshift-release-dev/ocp-release:4.17.3-multi
  replicas: 2 # scaled up after the restore
status:
  replicas: 0
`
)

// docEncryptionKey is the Secret the CLI renders with a fresh key.
var docEncryptionKey = `apiVersion: v1
data:
  key: ` + b64(renderKey) + `
kind: Secret
metadata:
  creationTimestamp: null
  labels:
    hypershift.openshift.io/safe-to-delete-with-cluster: "true"
  name: example-etcd-encryption-key
  namespace: clusters
type: Opaque
`

// renderDocs is the render, document by document; stream joins them.
func renderDocs() []string {
	return []string{docNamespace, docPullSecret, docEncryptionKey, docSSHKey, docHostedCluster, docNodePool}
}

// stream writes documents as the hypershift CLI does, after the header.
func stream(docs ...string) string {
	return docHeader + "---\n" + strings.Join(docs, "---\n")
}

// listOf writes documents as one v1 List, the way `kubectl get -o yaml`
// does, with a comment on top.
func listOf(docs ...string) string {
	var b strings.Builder
	b.WriteString("# the render as one List\napiVersion: v1\nitems:\n")
	for _, d := range docs {
		for i, l := range strings.Split(strings.TrimSuffix(d, "\n"), "\n") {
			if i == 0 {
				b.WriteString("- " + l + "\n")
			} else {
				b.WriteString("  " + l + "\n")
			}
		}
	}
	b.WriteString("kind: List\nmetadata:\n  resourceVersion: \"\"\n")
	return b.String()
}

// replace returns doc with old replaced by new, and panics when old is not
// there, so that a fixture cannot silently stop testing anything.
func replace(doc, old, new string) string {
	if !strings.Contains(doc, old) {
		panic("fixture does not contain " + old)
	}
	return strings.Replace(doc, old, new, 1)
}

// testBundle is the key bundle of the backup of the old cluster "old" in
// namespace "prod", as manifest.NewKeyBundle writes it and
// manifest.DecodeKeyBundle reads it (server metadata included, as a bundle
// edited by hand might have it).
func testBundle() []corev1.Secret {
	sec := func(ns, name, role string, data map[string][]byte) corev1.Secret {
		return corev1.Secret{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{
				Namespace: ns, Name: name,
				UID:             "0b5c1a4e-6a55-4b39-9b0e-5b1f3b0c1d2e",
				ResourceVersion: "123456",
				Labels:          map[string]string{"hypershift.openshift.io/safe-to-delete-with-cluster": "true"},
				Annotations: map[string]string{
					manifest.RoleAnnotation:            role,
					corev1.LastAppliedConfigAnnotation: `{"data":{"key":"` + b64(testKey) + `"}}`,
					"hypershift.openshift.io/cluster":  "prod/old",
				},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: "1"}},
			},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}
	}
	return []corev1.Secret{
		sec("prod", "old-etcd-encryption-key", manifest.RoleActiveKey, map[string][]byte{"key": testKey}),
		sec("prod", "old-etcd-encryption-key-previous", manifest.RoleBackupKey, map[string][]byte{"key": backupKey}),
		sec("prod-old", "root-ca", manifest.RoleControlPlane, map[string][]byte{
			"ca.crt": sum("root-ca crt"), "ca.key": sum("root-ca key")}),
		sec("prod-old", "etcd-signer", manifest.RoleControlPlane, map[string][]byte{
			"ca.crt": sum("etcd-signer crt"), "ca.key": sum("etcd-signer key")}),
		sec("prod-old", "sa-signing-key", manifest.RoleControlPlane, map[string][]byte{
			"service-account.key": sum("sa key"), "service-account.pub": sum("sa pub")}),
	}
}

// bundleWithout returns the test bundle without the Secrets of a role.
func bundleWithout(role string) []corev1.Secret {
	var out []corev1.Secret
	for _, s := range testBundle() {
		if s.Annotations[manifest.RoleAnnotation] != role {
			out = append(out, s)
		}
	}
	return out
}

// secretValues are every secret value of the fixtures, raw and base64, which
// no error and no Report may hold.
func secretValues() []string {
	out := []string{testURL}
	for _, s := range testBundle() {
		for _, v := range s.Data {
			out = append(out, string(v), b64(v))
		}
	}
	return out
}
