package pki

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestIssueVerifiesAgainstCA(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		hosts []string
		usage Usage
		ext   x509.ExtKeyUsage
		check string
	}{
		{"server by IP", []string{"127.0.0.1"}, Server, x509.ExtKeyUsageServerAuth, "127.0.0.1"},
		{"server by name", []string{"localhost", "127.0.0.11"}, Server | Client, x509.ExtKeyUsageServerAuth, "localhost"},
		{"client", nil, Client, x509.ExtKeyUsageClientAuth, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ca.Issue("leaf", []string{"system:masters"}, tt.hosts, tt.usage)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(p.CertPEM)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			opts := x509.VerifyOptions{Roots: roots, DNSName: tt.check, KeyUsages: []x509.ExtKeyUsage{tt.ext}}
			if _, err := cert.Verify(opts); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if got := cert.Subject.Organization; len(got) != 1 || got[0] != "system:masters" {
				t.Fatalf("organization %v", got)
			}
		})
	}
}
