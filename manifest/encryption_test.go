package manifest

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
)

const (
	testARN1 = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
	testARN2 = "arn:aws:kms:us-east-1:123456789012:key/66666666-7777-8888-9999-000000000000"
	testRole = "arn:aws:iam::123456789012:role/example-kms"
)

// The vectors were computed outside Go (Python) with the algorithms of
// HyperShift's control-plane-operator: 32-bit FNV-1 of the ARN in decimal
// for AWS, 32-bit FNV-1a of the key's JSON in hex for Azure.
func TestProviderNames(t *testing.T) {
	for arn, want := range map[string]string{
		testARN1: "awskmskey-115996158",
		testARN2: "awskmskey-3149724486",
		"":       "awskmskey-2166136261", // FNV-1's offset basis: nothing hashed
	} {
		if got := AWSKMSProviderName(arn); got != want {
			t.Errorf("AWSKMSProviderName(%q) = %q, want %q", arn, got, want)
		}
	}
	k := hyperv1.AzureKMSKey{KeyVaultName: "vault1", KeyName: "etcd", KeyVersion: "0123abcd"}
	if got, want := AzureKMSProviderName(k), "azure-faa4c8f9"; got != want {
		t.Errorf("AzureKMSProviderName = %q, want %q", got, want)
	}
}

func awsSpec(active, backup string) *hyperv1.SecretEncryptionSpec {
	s := &hyperv1.SecretEncryptionSpec{Type: hyperv1.KMS, KMS: &hyperv1.KMSSpec{Provider: hyperv1.AWS, AWS: &hyperv1.AWSKMSSpec{
		Region: "us-east-1", ActiveKey: hyperv1.AWSKMSKeyEntry{ARN: active},
		Auth: hyperv1.AWSKMSAuthSpec{AWSKMSRoleARN: testRole},
	}}}
	if backup != "" {
		s.KMS.AWS.BackupKey = &hyperv1.AWSKMSKeyEntry{ARN: backup}
	}
	return s
}

func TestEncryptionFromSpec(t *testing.T) {
	tests := []struct {
		name    string
		spec    *hyperv1.SecretEncryptionSpec
		want    *Encryption
		wantErr string
	}{
		{name: "none", spec: nil, want: nil},
		{name: "aescbc", spec: &hyperv1.SecretEncryptionSpec{Type: hyperv1.AESCBC, AESCBC: &hyperv1.AESCBCSpec{}},
			want: &Encryption{Type: EncryptionAESCBC}},
		{name: "aws active and backup", spec: awsSpec(testARN1, testARN2), want: &Encryption{Type: EncryptionKMS, KMS: &KMS{
			Provider: "AWS", Region: "us-east-1", Roles: []string{testRole},
			Keys: []KMSKey{{KMSKeyActive, testARN1, "awskmskey-115996158"}, {KMSKeyBackup, testARN2, "awskmskey-3149724486"}},
		}}},
		{name: "aws backup equal to active counts once", spec: awsSpec(testARN1, testARN1), want: &Encryption{Type: EncryptionKMS, KMS: &KMS{
			Provider: "AWS", Region: "us-east-1", Roles: []string{testRole},
			Keys: []KMSKey{{KMSKeyActive, testARN1, "awskmskey-115996158"}},
		}}},
		{name: "ibmcloud: highest version active", spec: &hyperv1.SecretEncryptionSpec{Type: hyperv1.KMS, KMS: &hyperv1.KMSSpec{
			Provider: hyperv1.IBMCloud, IBMCloud: &hyperv1.IBMCloudKMSSpec{Region: "us-south", Auth: hyperv1.IBMCloudKMSAuthSpec{Type: hyperv1.IBMCloudKMSManagedAuth},
				KeyList: []hyperv1.IBMCloudKMSKeyEntry{{CRKID: "a", KeyVersion: 1}, {CRKID: "b", KeyVersion: 2}}}}},
			want: &Encryption{Type: EncryptionKMS, KMS: &KMS{Provider: "IBMCloud", Region: "us-south", Roles: []string{"Managed"},
				Keys: []KMSKey{{KMSKeyActive, "b (key version 2)", "ibmv2"}, {KMSKeyBackup, "a (key version 1)", "ibmv2"}}}}},
		{name: "kms without section", spec: &hyperv1.SecretEncryptionSpec{Type: hyperv1.KMS}, wantErr: "kms is missing"},
		{name: "aws without active key", spec: awsSpec("", ""), wantErr: "activeKey.arn is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncryptionFromSpec(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

const oldManifest = `{"schemaVersion":1,"runID":"r","cluster":"example","namespace":"clusters","hcpNamespace":"clusters-example",
"online":false,"etcd":{"member":"etcd-0","revision":5,"totalSize":10,"sha256":"x"},
"snapshot":{"bucket":"b","key":"k/snapshot.db","size":10,"sha256":"y"},"keyBundle":{"secrets":[]},
"times":{"started":"2026-01-01T00:00:00Z","finished":"2026-01-01T00:01:00Z"},"downtimeSeconds":0,"hcpsnapVersion":"v0"}`

func TestManifestEncryptionRoundTrip(t *testing.T) {
	old, err := Decode([]byte(oldManifest))
	if err != nil {
		t.Fatalf("a manifest without an encryption section: %v", err)
	}
	if old.Encryption != nil {
		t.Fatalf("old manifest decoded with encryption %+v", old.Encryption)
	}
	enc, err := EncryptionFromSpec(awsSpec(testARN1, testARN2))
	if err != nil {
		t.Fatal(err)
	}
	old.Encryption = enc
	raw, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, old) {
		t.Errorf("round trip: got %+v, want %+v", back.Encryption, old.Encryption)
	}
	for _, s := range []string{`"encryption":{"type":"kms","kms":{"provider":"AWS","region":"us-east-1","keys":[{"role":"active","id":"` + testARN1 + `","providerName":"awskmskey-115996158"}`} {
		if !strings.Contains(string(raw), s) {
			t.Errorf("manifest JSON lacks %s:\n%s", s, raw)
		}
	}
}

func TestDecodeRefusesBadEncryption(t *testing.T) {
	for name, section := range map[string]string{
		"unknown type":      `{"type":"secretbox"}`,
		"kms without kms":   `{"type":"kms"}`,
		"aescbc with kms":   `{"type":"aescbc","kms":{"provider":"AWS","keys":[{"role":"active","id":"a"}]}}`,
		"no active key":     `{"type":"kms","kms":{"provider":"AWS","keys":[{"role":"backup","id":"a"}]}}`,
		"key without an ID": `{"type":"kms","kms":{"provider":"AWS","keys":[{"role":"active","id":""}]}}`,
	} {
		data := strings.Replace(oldManifest, `"times":`, `"encryption":`+section+`,"times":`, 1)
		if _, err := Decode([]byte(data)); err == nil || !strings.Contains(err.Error(), "encryption") {
			t.Errorf("%s: err = %v, want a refusal naming the encryption section", name, err)
		}
	}
}
