package steps

import (
	"strings"
	"testing"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// TestBackupKMSCluster proves that a KMS-encrypted HostedCluster is backed
// up with its control plane Secrets and no AES key, and that the manifest
// records its KMS keys, provider names and role, and nothing else.
func TestBackupKMSCluster(t *testing.T) {
	const (
		active = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
		backup = "arn:aws:kms:us-east-1:123456789012:key/66666666-7777-8888-9999-000000000000"
		role   = "arn:aws:iam::123456789012:role/example-kms"
	)
	fx := newFixture(t, nil)
	fx.hs.hc.Spec.SecretEncryption = &hyperv1.SecretEncryptionSpec{Type: hyperv1.KMS, KMS: &hyperv1.KMSSpec{
		Provider: hyperv1.AWS, AWS: &hyperv1.AWSKMSSpec{Region: "us-east-1",
			ActiveKey: hyperv1.AWSKMSKeyEntry{ARN: active}, BackupKey: &hyperv1.AWSKMSKeyEntry{ARN: backup},
			Auth: hyperv1.AWSKMSAuthSpec{AWSKMSRoleARN: role}}}}
	s := fx.state(defaultOptions())
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	checkKeyBundle(t, fx, "hcpsnap-keys/example/"+s.Out.Timestamp+"/key-bundle.json", []string{"root-ca", "etcd-signer", "sa-signing-key"})
	m := readManifest(t, fx, "backups/example/"+s.Out.Timestamp+"/manifest.json")
	e := m.Encryption
	if e == nil || e.Type != manifest.EncryptionKMS || e.KMS == nil {
		t.Fatalf("manifest encryption %+v, want kms", e)
	}
	want := []manifest.KMSKey{
		{Role: manifest.KMSKeyActive, ID: active, ProviderName: manifest.AWSKMSProviderName(active)},
		{Role: manifest.KMSKeyBackup, ID: backup, ProviderName: manifest.AWSKMSProviderName(backup)},
	}
	if e.KMS.Provider != "AWS" || e.KMS.Region != "us-east-1" || len(e.KMS.Keys) != 2 || e.KMS.Keys[0] != want[0] || e.KMS.Keys[1] != want[1] ||
		len(e.KMS.Roles) != 1 || e.KMS.Roles[0] != role {
		t.Errorf("manifest kms %+v, want keys %+v and role %s", e.KMS, want, role)
	}
}

// TestBackupAESCBCClusterRecordsType proves that an aescbc cluster's
// manifest says so, which restore uses to refuse a KMS render.
func TestBackupAESCBCClusterRecordsType(t *testing.T) {
	fx := newFixture(t, nil)
	s := fx.state(defaultOptions())
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	m := readManifest(t, fx, "backups/example/"+s.Out.Timestamp+"/manifest.json")
	if m.Encryption == nil || m.Encryption.Type != manifest.EncryptionAESCBC || m.Encryption.KMS != nil {
		t.Errorf("manifest encryption %+v, want aescbc", m.Encryption)
	}
}

// TestPlanKMSClusterSaysNoAESKey proves that the dry-run runbook says why no AES key is
// saved.
func TestPlanKMSClusterSaysNoAESKey(t *testing.T) {
	fx := newFixture(t, nil)
	fx.hs.hc.Spec.SecretEncryption = &hyperv1.SecretEncryptionSpec{Type: hyperv1.KMS, KMS: &hyperv1.KMSSpec{
		Provider: hyperv1.AWS, AWS: &hyperv1.AWSKMSSpec{Region: "us-east-1", ActiveKey: hyperv1.AWSKMSKeyEntry{ARN: "arn:aws:kms:us-east-1:1:key/a"}}}}
	s := fx.state(defaultOptions())
	p, err := planSaveKeys(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Actions) == 0 || !strings.Contains(p.Actions[0], "no AES key to save") || !strings.Contains(p.Actions[0], "arn:aws:kms:us-east-1:1:key/a") {
		t.Errorf("plan actions %q", p.Actions)
	}
}

// TestBackupUnknownKMSProvider proves that a KMS configuration hcpsnap
// cannot read does not fail the backup; the manifest then records no
// encryption, which restore treats as it treats old manifests.
func TestBackupUnknownKMSProvider(t *testing.T) {
	fx := newFixture(t, nil)
	fx.hs.hc.Spec.SecretEncryption = &hyperv1.SecretEncryptionSpec{Type: hyperv1.KMS, KMS: &hyperv1.KMSSpec{Provider: "GCP"}}
	s := fx.state(defaultOptions())
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	m := readManifest(t, fx, "backups/example/"+s.Out.Timestamp+"/manifest.json")
	if m.Encryption != nil {
		t.Errorf("manifest encryption %+v, want none", m.Encryption)
	}
}
