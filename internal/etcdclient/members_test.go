package etcdclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

const testNS = "clusters-e2e"

// pki is a CA, a serving certificate for DNS name localhost, and a client
// certificate, all PEM.
type pki struct {
	caPEM, serverCrt, serverKey, clientCrt, clientKey []byte
}

func newPKI(t *testing.T) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd-signer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, dns []string, usage x509.ExtKeyUsage) ([]byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	var p pki
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	p.serverCrt, p.serverKey = leaf(2, "etcd-server", []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	p.clientCrt, p.clientKey = leaf(3, "etcd-client", nil, x509.ExtKeyUsageClientAuth)
	return p
}

// objects are the Secret and ConfigMap HyperShift keeps in the namespace.
func objects(p pki, crtKey, keyKey string) (*corev1.Secret, *corev1.ConfigMap) {
	return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: DefaultClientSecret},
			Data:       map[string][]byte{crtKey: p.clientCrt, keyKey: p.clientKey},
		}, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: DefaultCAConfigMap},
			Data:       map[string]string{"ca.crt": string(p.caPEM)},
		}
}

// TestTLSConfig reads the client certificate under HyperShift's key names
// and a kubernetes.io/tls Secret's, and names the object and key to fix
// when one is missing.
func TestTLSConfig(t *testing.T) {
	p := newPKI(t)
	secret, cm := objects(p, "etcd-client.crt", "etcd-client.key")
	tlsSecret, _ := objects(p, "tls.crt", "tls.key")
	both := secret.DeepCopy()
	both.Data["tls.crt"], both.Data["tls.key"] = []byte("not a certificate"), []byte("not a key")
	noKeys := secret.DeepCopy()
	noKeys.Data = map[string][]byte{"etcd-client.crt": p.clientCrt}
	badKey := secret.DeepCopy()
	badKey.Data["etcd-client.key"] = []byte("garbage")
	noCA := cm.DeepCopy()
	noCA.Data = map[string]string{"service-ca.crt": string(p.caPEM)}
	badCA := cm.DeepCopy()
	badCA.Data["ca.crt"] = "garbage"
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: DefaultClientSecret}, Data: secret.Data}

	cases := []struct {
		name    string
		objects []runtime.Object
		want    []string // substrings of the error; none: success
	}{
		{"HyperShift key names", []runtime.Object{secret, cm}, nil},
		{"kubernetes.io/tls key names", []runtime.Object{tlsSecret, cm}, nil},
		{"HyperShift's names first", []runtime.Object{both, cm}, nil},
		{"no Secret", []runtime.Object{cm, other}, []string{"Secret clusters-e2e/etcd-client-tls", "not found"}},
		{"no key", []runtime.Object{noKeys, cm}, []string{"Secret clusters-e2e/etcd-client-tls", "etcd-client.key", "tls.key"}},
		{"bad key", []runtime.Object{badKey, cm}, []string{"Secret clusters-e2e/etcd-client-tls", "etcd-client.crt and etcd-client.key"}},
		{"no ConfigMap", []runtime.Object{secret}, []string{"ConfigMap clusters-e2e/etcd-ca", "not found"}},
		{"no ca.crt", []runtime.Object{secret, noCA}, []string{"ConfigMap clusters-e2e/etcd-ca", "no key ca.crt"}},
		{"bad ca.crt", []runtime.Object{secret, badCA}, []string{"ConfigMap clusters-e2e/etcd-ca", "no PEM certificate"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &Members{Kube: fake.NewClientset(tc.objects...)}
			cfg, err := m.tlsConfig(context.Background(), testNS)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
				if err != nil || leaf.Subject.CommonName != "etcd-client" {
					t.Fatalf("client certificate %v, %v", leaf, err)
				}
				if cfg.ServerName != "localhost" || cfg.RootCAs == nil || cfg.MinVersion < tls.VersionTLS12 {
					t.Errorf("server name %q, CA pool %v, min version %x", cfg.ServerName, cfg.RootCAs != nil, cfg.MinVersion)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) || strings.Contains(err.Error(), "\n") {
					t.Errorf("error %q: want one line containing %q", err, w)
				}
			}
		})
	}
	// Overrides replace every default.
	renamed := secret.DeepCopy()
	renamed.Name = "my-client"
	renamedCM := cm.DeepCopy()
	renamedCM.Name = "my-ca"
	m := &Members{Kube: fake.NewClientset(renamed, renamedCM), ClientSecret: "my-client", CAConfigMap: "my-ca", ServerName: "etcd-client"}
	cfg, err := m.tlsConfig(context.Background(), testNS)
	if err != nil || cfg.ServerName != "etcd-client" {
		t.Fatalf("overrides: %v, %v", cfg, err)
	}
	if got := m.tlsHint(testNS); !strings.Contains(got, `"etcd-client"`) || !strings.Contains(got, "clusters-e2e/my-ca") || !strings.Contains(got, "clusters-e2e/my-client") {
		t.Errorf("TLS hint %q does not name the overrides", got)
	}
}
