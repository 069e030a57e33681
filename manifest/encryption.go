package manifest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
)

// Encryption types of Encryption.Type, as spec.secretEncryption.type spells
// them.
const (
	EncryptionAESCBC = string(hyperv1.AESCBC)
	EncryptionKMS    = string(hyperv1.KMS)
)

// Key roles of KMSKey.Role.
const (
	KMSKeyActive = "active"
	KMSKeyBackup = "backup"
)

// Encryption records how the hosted cluster encrypted its Secrets in etcd
// when it was backed up, so that restore can check that a new cluster reads
// them. It holds names and identifiers only: for aescbc the keys themselves
// are in the key bundle, for kms they never leave the KMS.
//
// Manifests written before this section existed have none; restore then
// assumes aescbc when the key bundle holds an AES key.
type Encryption struct {
	// Type is EncryptionAESCBC or EncryptionKMS.
	Type string `json:"type"`
	// KMS is set when Type is EncryptionKMS.
	KMS *KMS `json:"kms,omitempty"`
}

// KMS is the KMS configuration of spec.secretEncryption.kms.
//
// How HyperShift turns it into the kube-apiserver's EncryptionConfiguration
// (control-plane-operator, hostedcontrolplane/v2/kas/kms): one KMS provider
// per key, the active key first (it encrypts new writes), then the backup key
// (it only decrypts), then identity. Every stored value starts with
// `k8s:enc:kms:<v1|v2>:<provider name>:`, and the kube-apiserver decrypts a
// value only with the provider of that name, so data stays readable exactly
// while a provider of that name, backed by the same key, is configured. The
// provider names are derived from the keys:
//
//   - AWS: "awskmskey-" and the decimal 32-bit FNV-1 hash of the key ARN;
//     activeKey and backupKey each get one (plugin sockets awskmsactive.sock
//     and awskmsbackup.sock), using the role of auth.awsKms.
//   - Azure: "azure-" and the 8-digit hex 32-bit FNV-1a hash of the key's
//     JSON ({"keyVaultName","keyName","keyVersion"}).
//   - IBMCloud: one provider "ibmv2" for the whole keyList; the plugin picks
//     the key version, so every entry may have encrypted data.
//
// HyperShift writes KMS API v2 for a new configuration and keeps v1 where a
// running cluster already uses it; a restored cluster starts with a new
// configuration (v2), which cannot read data written under v1 (prefix
// k8s:enc:kms:v1:). hcpsnap does not see the version from the HostedCluster.
type KMS struct {
	// Provider is AWS, IBMCloud or Azure (spec.secretEncryption.kms.provider).
	Provider string `json:"provider"`
	// Region is the AWS or IBM Cloud region of the keys.
	Region string `json:"region,omitempty"`
	// Keys are every key that may have encrypted the data, the active key
	// first.
	Keys []KMSKey `json:"keys"`
	// Roles are who may use the keys: the AWS role ARN of auth.awsKms, the
	// Azure managed identity's client ID, or the IBM Cloud auth type. A
	// restored cluster needs a role allowed to decrypt with every key.
	Roles []string `json:"roles,omitempty"`
}

// KMSKey is one key of the KMS configuration.
type KMSKey struct {
	// Role is KMSKeyActive or KMSKeyBackup.
	Role string `json:"role"`
	// ID names the key: the AWS key ARN, Azure "vault/key/version", or the
	// IBM Cloud root key (CRK) ID with its key version.
	ID string `json:"id"`
	// ProviderName is the kube-apiserver's provider name for the key, the
	// <provider name> of every value it encrypted.
	ProviderName string `json:"providerName,omitempty"`
}

// AWSKMSProviderName returns the kube-apiserver provider name HyperShift's
// control-plane-operator gives the AWS KMS key arn.
func AWSKMSProviderName(arn string) string {
	h := fnv.New32()
	h.Write([]byte(arn))
	return "awskmskey-" + strconv.FormatUint(uint64(h.Sum32()), 10)
}

// AzureKMSProviderName returns the kube-apiserver provider name HyperShift's
// control-plane-operator gives the Azure Key Vault key k.
func AzureKMSProviderName(k hyperv1.AzureKMSKey) string {
	raw, _ := json.Marshal(k) // a struct of strings always marshals
	h := fnv.New32a()
	h.Write(raw)
	return fmt.Sprintf("azure-%08x", h.Sum32())
}

// ibmCloudProviderName is the one provider HyperShift configures for IBM
// Cloud Key Protect, whatever the keys.
const ibmCloudProviderName = "ibmv2"

// EncryptionFromSpec returns what a HostedCluster's
// spec.secretEncryption says, or nil when it has none. It refuses a kms
// configuration without a provider section or an active key, since no
// kube-apiserver could have encrypted with it.
func EncryptionFromSpec(spec *hyperv1.SecretEncryptionSpec) (*Encryption, error) {
	if spec == nil {
		return nil, nil
	}
	switch {
	case spec.Type == hyperv1.KMS:
	case spec.Type == hyperv1.AESCBC || spec.Type == "" && spec.AESCBC != nil:
		return &Encryption{Type: EncryptionAESCBC}, nil
	case spec.Type == "":
		return nil, nil
	default:
		return nil, fmt.Errorf("spec.secretEncryption.type %q is neither aescbc nor kms", spec.Type)
	}
	if spec.KMS == nil {
		return nil, fmt.Errorf("spec.secretEncryption.type is kms but spec.secretEncryption.kms is missing")
	}
	k := &KMS{Provider: string(spec.KMS.Provider)}
	switch spec.KMS.Provider {
	case hyperv1.AWS:
		a := spec.KMS.AWS
		if a == nil || a.ActiveKey.ARN == "" {
			return nil, fmt.Errorf("spec.secretEncryption.kms.aws.activeKey.arn is missing")
		}
		k.Region = a.Region
		k.Keys = append(k.Keys, KMSKey{KMSKeyActive, a.ActiveKey.ARN, AWSKMSProviderName(a.ActiveKey.ARN)})
		if a.BackupKey != nil && a.BackupKey.ARN != "" && a.BackupKey.ARN != a.ActiveKey.ARN {
			k.Keys = append(k.Keys, KMSKey{KMSKeyBackup, a.BackupKey.ARN, AWSKMSProviderName(a.BackupKey.ARN)})
		}
		if a.Auth.AWSKMSRoleARN != "" {
			k.Roles = []string{a.Auth.AWSKMSRoleARN}
		}
	case hyperv1.AZURE:
		a := spec.KMS.Azure
		if a == nil || a.ActiveKey.KeyName == "" {
			return nil, fmt.Errorf("spec.secretEncryption.kms.azure.activeKey is missing")
		}
		k.Keys = append(k.Keys, KMSKey{KMSKeyActive, azureKeyID(a.ActiveKey), AzureKMSProviderName(a.ActiveKey)})
		if a.BackupKey != nil && *a.BackupKey != a.ActiveKey {
			k.Keys = append(k.Keys, KMSKey{KMSKeyBackup, azureKeyID(*a.BackupKey), AzureKMSProviderName(*a.BackupKey)})
		}
		if a.KMS.ClientID != "" {
			k.Roles = []string{string(a.KMS.ClientID)}
		}
	case hyperv1.IBMCloud:
		a := spec.KMS.IBMCloud
		if a == nil || len(a.KeyList) == 0 {
			return nil, fmt.Errorf("spec.secretEncryption.kms.ibmcloud.keyList is empty")
		}
		k.Region = a.Region
		// The highest key version encrypts; every listed one may have.
		list := append([]hyperv1.IBMCloudKMSKeyEntry(nil), a.KeyList...)
		sort.SliceStable(list, func(i, j int) bool { return list[i].KeyVersion > list[j].KeyVersion })
		for i, e := range list {
			role := KMSKeyBackup
			if i == 0 {
				role = KMSKeyActive
			}
			k.Keys = append(k.Keys, KMSKey{role, e.CRKID + " (key version " + strconv.Itoa(e.KeyVersion) + ")", ibmCloudProviderName})
		}
		if a.Auth.Type != "" {
			k.Roles = []string{string(a.Auth.Type)}
		}
	default:
		return nil, fmt.Errorf("spec.secretEncryption.kms.provider %q is not AWS, Azure or IBMCloud", spec.KMS.Provider)
	}
	return &Encryption{Type: EncryptionKMS, KMS: k}, nil
}

func azureKeyID(k hyperv1.AzureKMSKey) string {
	return k.KeyVaultName + "/" + k.KeyName + "/" + k.KeyVersion
}

// ActiveKey returns the active key, or nil.
func (k *KMS) ActiveKey() *KMSKey {
	for i := range k.Keys {
		if k.Keys[i].Role == KMSKeyActive {
			return &k.Keys[i]
		}
	}
	return nil
}

// Check refuses an encryption section no backup writes: a manifest is read
// back from the bucket and is untrusted.
func (e *Encryption) Check() error {
	switch {
	case e == nil:
		return nil
	case e.Type == EncryptionAESCBC && e.KMS == nil:
		return nil
	case e.Type != EncryptionKMS:
		return fmt.Errorf("type %q with kms %v: want aescbc without kms, or kms with kms", e.Type, e.KMS != nil)
	case e.KMS == nil || e.KMS.Provider == "":
		return fmt.Errorf("type kms without a kms provider")
	case e.KMS.ActiveKey() == nil:
		return fmt.Errorf("kms without an active key")
	}
	for _, k := range e.KMS.Keys {
		if k.ID == "" || k.Role != KMSKeyActive && k.Role != KMSKeyBackup {
			return fmt.Errorf("kms key %q with role %q: want an ID with role active or backup", k.ID, k.Role)
		}
	}
	return nil
}
