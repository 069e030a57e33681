package restore

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"

	"github.com/hcpsnap/hcpsnap/manifest"
)

const (
	kmsARN1 = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
	kmsARN2 = "arn:aws:kms:us-east-1:123456789012:key/66666666-7777-8888-9999-000000000000"
	kmsARN3 = "arn:aws:kms:us-east-1:123456789012:key/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	kmsRole = "arn:aws:iam::123456789012:role/example-kms"
)

const aescbcSection = "  secretEncryption:\n    aescbc:\n      activeKey:\n        name: example-etcd-encryption-key\n    type: aescbc\n"

// kmsRender is the fixture render with AWS KMS secret encryption, as the
// hypershift CLI writes it (keys sorted).
func kmsRender(active, backup, role string) string {
	sec := "  secretEncryption:\n    kms:\n      aws:\n        activeKey:\n          arn: " + active + "\n        auth:\n          awsKms: " + role + "\n"
	if backup != "" {
		sec += "        backupKey:\n          arn: " + backup + "\n"
	}
	sec += "        region: us-east-1\n      provider: AWS\n    type: kms\n"
	return stream(replace(docHostedCluster, aescbcSection, sec))
}

// kmsBackup is the manifest's encryption section of an AWS KMS backup.
func kmsBackup(t *testing.T, active, backup string) *manifest.Encryption {
	t.Helper()
	s := &hyperv1.SecretEncryptionSpec{Type: hyperv1.KMS, KMS: &hyperv1.KMSSpec{Provider: hyperv1.AWS, AWS: &hyperv1.AWSKMSSpec{
		Region: "us-east-1", ActiveKey: hyperv1.AWSKMSKeyEntry{ARN: active}, Auth: hyperv1.AWSKMSAuthSpec{AWSKMSRoleARN: kmsRole}}}}
	if backup != "" {
		s.KMS.AWS.BackupKey = &hyperv1.AWSKMSKeyEntry{ARN: backup}
	}
	e, err := manifest.EncryptionFromSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// kmsBundle is the key bundle of a KMS backup: control plane Secrets only.
func kmsBundle() Options {
	o := opts()
	o.Secrets = nil
	for _, s := range testBundle() {
		if s.Annotations[manifest.RoleAnnotation] == manifest.RoleControlPlane {
			o.Secrets = append(o.Secrets, s)
		}
	}
	return o
}

// TestPatchKMS is the decision table of a KMS backup against KMS renders:
// every key that encrypted data must be named, as active or backup key.
func TestPatchKMS(t *testing.T) {
	tests := []struct {
		name         string
		backup       *manifest.Encryption
		render       string
		role         string
		wantKeys     []string
		wantErr      []string
		wantWarnings []string
	}{{
		name:     "same active key",
		backup:   kmsBackup(t, kmsARN1, ""),
		render:   kmsRender(kmsARN1, "", kmsRole),
		wantKeys: []string{kmsARN1},
	}, {
		name:     "same active and backup keys",
		backup:   kmsBackup(t, kmsARN1, kmsARN2),
		render:   kmsRender(kmsARN1, kmsARN2, kmsRole),
		wantKeys: []string{kmsARN1, kmsARN2},
	}, {
		name:     "rotated: the backup's active key is the render's backup key",
		backup:   kmsBackup(t, kmsARN1, ""),
		render:   kmsRender(kmsARN3, kmsARN1, kmsRole),
		wantKeys: []string{kmsARN1},
	}, {
		name:     "active and backup swapped",
		backup:   kmsBackup(t, kmsARN1, kmsARN2),
		render:   kmsRender(kmsARN2, kmsARN1, kmsRole),
		wantKeys: []string{kmsARN1, kmsARN2},
	}, {
		name:         "another role is a warning",
		backup:       kmsBackup(t, kmsARN1, ""),
		render:       kmsRender(kmsARN1, "", "arn:aws:iam::123456789012:role/other"),
		wantKeys:     []string{kmsARN1},
		wantWarnings: []string{"differs from the backup's " + kmsRole},
	}, {
		name:         "another region is a warning",
		backup:       kmsBackup(t, kmsARN1, ""),
		render:       replace(kmsRender(kmsARN1, "", kmsRole), "region: us-east-1\n      provider: AWS", "region: eu-west-1\n      provider: AWS"),
		wantKeys:     []string{kmsARN1},
		wantWarnings: []string{`KMS region is "eu-west-1", the backup's "us-east-1"`},
	}, {
		name:    "active key missing",
		backup:  kmsBackup(t, kmsARN1, ""),
		render:  kmsRender(kmsARN3, "", kmsRole),
		wantErr: []string{"does not name AWS KMS key " + kmsARN1, "the backup's active key", manifest.AWSKMSProviderName(kmsARN1), "activeKey.arn to " + kmsARN1, "backupKey.arn"},
	}, {
		name:    "backup key dropped",
		backup:  kmsBackup(t, kmsARN1, kmsARN2),
		render:  kmsRender(kmsARN1, "", kmsRole),
		wantErr: []string{"does not name AWS KMS key " + kmsARN2, "the backup's backup key", "needs all 2 keys", "kms.aws.backupKey.arn"},
	}, {
		name:    "rotated while the backup had two keys",
		backup:  kmsBackup(t, kmsARN1, kmsARN2),
		render:  kmsRender(kmsARN3, kmsARN1, kmsRole),
		wantErr: []string{"does not name AWS KMS key " + kmsARN2, "needs all 2 keys"},
	}, {
		name:    "aescbc render for a KMS backup",
		backup:  kmsBackup(t, kmsARN1, kmsARN2),
		render:  stream(docEncryptionKey, docHostedCluster),
		wantErr: []string{`spec.secretEncryption.type is aescbc, but the backed-up data is encrypted with AWS KMS key ` + kmsARN1, "kms.aws.activeKey.arn and kms.aws.backupKey.arn", "never puts an AES key"},
	}, {
		name:    "no secretEncryption for a KMS backup",
		backup:  kmsBackup(t, kmsARN1, ""),
		render:  stream(replace(docHostedCluster, aescbcSection, "")),
		wantErr: []string{"spec.secretEncryption.type is not set", kmsARN1},
	}, {
		name:    "other provider",
		backup:  kmsBackup(t, kmsARN1, ""),
		render:  stream(replace(docHostedCluster, aescbcSection, "  secretEncryption:\n    kms:\n      ibmcloud:\n        auth:\n          type: Managed\n        keyList:\n        - crkID: a\n          instanceID: i\n          correlationID: c\n          url: https://kp\n          keyVersion: 1\n        region: us-south\n      provider: IBMCloud\n    type: kms\n")),
		wantErr: []string{`kms.provider is "IBMCloud"`, kmsARN1},
	}, {
		name:    "KMS render for an aescbc backup",
		backup:  &manifest.Encryption{Type: manifest.EncryptionAESCBC},
		render:  kmsRender(kmsARN1, "", kmsRole),
		wantErr: []string{`spec.secretEncryption.type is "kms"`, "encrypted with an AES-CBC key", "render the cluster with aescbc encryption"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := kmsBundle()
			if tt.backup.Type == manifest.EncryptionAESCBC {
				o = opts()
			}
			o.Encryption = tt.backup
			out, rep, err := Patch([]byte(tt.render), o)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Patch succeeded, want an error")
				}
				if out != nil {
					t.Error("Patch returned output with its error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q\ndoes not contain %q", err, w)
					}
				}
				assertClean(t, err.Error(), o)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Encryption != manifest.EncryptionKMS || rep.KMSProvider != "AWS" || !slices.Equal(rep.KMSKeys, tt.wantKeys) {
				t.Errorf("report encryption %q provider %q keys %q, want kms AWS %q", rep.Encryption, rep.KMSProvider, rep.KMSKeys, tt.wantKeys)
			}
			if rep.EncryptionSecret != "" || rep.EncryptionKeyAction != "" {
				t.Errorf("report names an AES key Secret for a KMS render: %+v", rep)
			}
			if len(rep.Warnings) != len(tt.wantWarnings) {
				t.Errorf("warnings %q, want %q", rep.Warnings, tt.wantWarnings)
			}
			for i, w := range tt.wantWarnings {
				if i < len(rep.Warnings) && !strings.Contains(rep.Warnings[i], w) {
					t.Errorf("warning %q does not contain %q", rep.Warnings[i], w)
				}
			}
			r := readRender(t, out)
			hc := r.hostedCluster(t, "clusters/example")
			if got := hc.Spec.Etcd.Managed.Storage.RestoreSnapshotURL; !slices.Equal(got, []string{testURL}) {
				t.Errorf("restoreSnapshotURL not set")
			}
			// The render's KMS configuration is kept as rendered.
			var in hyperv1.HostedCluster
			inRender := readRender(t, []byte(tt.render))
			in = inRender.hostedCluster(t, "clusters/example")
			gotEnc, _ := json.Marshal(hc.Spec.SecretEncryption)
			wantEnc, _ := json.Marshal(in.Spec.SecretEncryption)
			if string(gotEnc) != string(wantEnc) {
				t.Errorf("secretEncryption changed:\n%s\nwant\n%s", gotEnc, wantEnc)
			}
			// No AES key: only the control plane Secrets were added.
			for ref := range r.secrets {
				if !slices.Contains(controlPlaneAdded, ref) {
					t.Errorf("the output holds Secret %s besides the control plane Secrets", ref)
				}
			}
			if len(r.secrets) != len(controlPlaneAdded) {
				t.Errorf("the output holds %d Secrets, want the %d control plane Secrets", len(r.secrets), len(controlPlaneAdded))
			}
		})
	}
}

// TestPatchKMSNeverAddsAnAESKey feeds a KMS backup a key bundle that holds
// AES keys anyway (an edited bundle, or one of another backup): they are
// reported and not added.
func TestPatchKMSNeverAddsAnAESKey(t *testing.T) {
	o := opts() // the bundle with active and backup AES keys
	o.Encryption = kmsBackup(t, kmsARN1, "")
	out, rep, err := Patch([]byte(kmsRender(kmsARN1, "", kmsRole)), o)
	if err != nil {
		t.Fatal(err)
	}
	r := readRender(t, out)
	for ref, s := range r.secrets {
		if !slices.Contains(controlPlaneAdded, ref) {
			t.Errorf("Secret %s added to a KMS render", ref)
		}
		if _, ok := s.Data[aesKeyDataKey]; ok && !strings.HasSuffix(ref, "/root-ca") {
			t.Errorf("Secret %s holds an AES key", ref)
		}
	}
	for _, v := range secretValues() {
		if v != testURL && strings.Contains(string(out), v) && !isControlPlaneValue(v) {
			t.Errorf("the output holds an AES key value")
		}
	}
	if len(rep.Warnings) != 2 || !strings.Contains(rep.Warnings[0], "not added: the backed-up data is encrypted with KMS") {
		t.Errorf("warnings %q, want two about the AES key Secrets not added", rep.Warnings)
	}
}

// isControlPlaneValue tells whether v is a value of a control plane Secret
// of the test bundle, which a KMS restore does add.
func isControlPlaneValue(v string) bool {
	for _, s := range testBundle() {
		if s.Annotations[manifest.RoleAnnotation] != manifest.RoleControlPlane {
			continue
		}
		for _, d := range s.Data {
			if string(d) == v || b64(d) == v {
				return true
			}
		}
	}
	return false
}

// TestPatchOldManifest keeps today's behaviour for manifests without an
// encryption section: aescbc with the bundle's key; a KMS render refused.
func TestPatchOldManifest(t *testing.T) {
	if _, rep, err := Patch([]byte(stream(docEncryptionKey, docHostedCluster)), opts()); err != nil || rep.Encryption != manifest.EncryptionAESCBC {
		t.Errorf("aescbc render, old manifest: %v, encryption %q", err, rep.Encryption)
	}
	_, _, err := Patch([]byte(kmsRender(kmsARN1, "", kmsRole)), opts())
	if err == nil || !strings.Contains(err.Error(), "render the cluster with aescbc encryption") {
		t.Errorf("KMS render, old manifest with an AES key: %v", err)
	}
	_, _, err = Patch([]byte(kmsRender(kmsARN1, "", kmsRole)), kmsBundle())
	if err == nil || !strings.Contains(err.Error(), "take a new backup with this hcpsnap") {
		t.Errorf("KMS render, old manifest without an AES key: %v", err)
	}
}
