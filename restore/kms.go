package restore

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	"gopkg.in/yaml.v3"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// checkKMS compares the render's secret encryption with the backup's and
// says whether the render is a KMS render that keeps the data readable.
//
// The kube-apiserver decrypts a stored value only with the provider named
// in its envelope (k8s:enc:kms:v2:<provider name>:), and HyperShift derives
// that name from the key (for AWS, a hash of the key ARN). So the rule is:
// every key that may have encrypted the backed-up data (the backup's active
// and backup keys) must be configured in the render, as its active or its
// backup key. A render that rotated to a new active key and keeps the old
// active key as its backup key is accepted; one that drops a key is refused
// with the key it needs. The render's KMS configuration is never changed and
// no AES key is added to it: an AES key would not read KMS data.
//
// An aescbc render for a KMS backup, and a KMS render for an aescbc backup,
// are refused with what to change. A manifest without an encryption section
// (written before hcpsnap recorded it) counts as aescbc, as before.
func (p *patcher) checkKMS(hc *object, backup *manifest.Encryption, b bundle) (bool, error) {
	id := fmt.Sprintf("HostedCluster %q (%s)", hc.ref(), hc.where())
	se := get(get(hc.node, "spec"), "secretEncryption")
	renderType := str(get(se, "type"))
	if backup == nil || backup.Type != manifest.EncryptionKMS {
		switch {
		case renderType == manifest.EncryptionKMS && backup == nil && !b.hasAES():
			return false, fmt.Errorf("%s: spec.secretEncryption.type is \"kms\", but the backup's manifest does not record how its data is encrypted (an hcpsnap before KMS support wrote it, or the backup could not read the cluster's KMS configuration; its log says which) and its key bundle holds no AES key: hcpsnap cannot check which KMS keys the data needs; take a new backup with this hcpsnap, or render with aescbc if the cluster used it",
				id)
		case renderType != "" && renderType != manifest.EncryptionAESCBC:
			return false, fmt.Errorf("%s: spec.secretEncryption.type is %q: the backed-up data is encrypted with an AES-CBC key, which only aescbc secret encryption can read; render the cluster with aescbc encryption (type: aescbc with an aescbc.activeKey Secret, no kms section), and hcpsnap puts the backed-up key into it",
				id, renderType)
		}
		return false, nil
	}
	need := backup.KMS
	active := need.ActiveKey()
	if renderType != manifest.EncryptionKMS {
		t := renderType
		if t == "" {
			t = "not set"
		}
		return false, fmt.Errorf("%s: spec.secretEncryption.type is %s, but the backed-up data is encrypted with %s KMS key %s: set %s; hcpsnap never puts an AES key in its place",
			id, t, need.Provider, active.ID, setKMSHint(need))
	}
	var spec hyperv1.SecretEncryptionSpec
	if err := decodeNode(se, &spec); err != nil {
		return false, fmt.Errorf("%s: spec.secretEncryption cannot be read (%v): fix the render", id, err)
	}
	got, err := manifest.EncryptionFromSpec(&spec)
	if err != nil {
		return false, fmt.Errorf("%s: %v: the backed-up data needs %s KMS key %s; set %s", id, err, need.Provider, active.ID, setKMSHint(need))
	}
	if got.KMS.Provider != need.Provider {
		return false, fmt.Errorf("%s: spec.secretEncryption.kms.provider is %q, but the backed-up data is encrypted with %s KMS key %s: set %s",
			id, got.KMS.Provider, need.Provider, active.ID, setKMSHint(need))
	}
	have := map[string]bool{}
	for _, k := range got.KMS.Keys {
		have[k.ID] = true
	}
	for _, k := range need.Keys {
		if !have[k.ID] {
			hint := putKeyHint(need.Provider, k.ID)
			if len(need.Keys) > 1 && need.Provider != string(hyperv1.IBMCloud) {
				hint = fmt.Sprintf("the data needs all %d keys of the backup, so set %s; rotate to a new key once the restored cluster has rewritten its Secrets",
					len(need.Keys), setKMSHint(need))
			}
			return false, fmt.Errorf("%s does not name %s KMS key %s (the backup's %s key, kube-apiserver provider %s), which encrypted backed-up data: %s",
				id, need.Provider, k.ID, k.Role, providerName(k), hint)
		}
		p.rep.KMSKeys = append(p.rep.KMSKeys, k.ID)
	}
	p.rep.KMSProvider = need.Provider
	if need.Region != "" && got.KMS.Region != need.Region {
		p.warn("the render's KMS region is %q, the backup's %q: the KMS plugin reaches the keys in the region it is given", got.KMS.Region, need.Region)
	}
	switch {
	case len(got.KMS.Roles) == 0 && len(need.Roles) > 0:
		p.warn("the render names no KMS role (the backup used %s): the kube-apiserver cannot use the keys without one", strings.Join(need.Roles, ", "))
	case len(need.Roles) > 0 && !slices.Equal(got.KMS.Roles, need.Roles):
		p.warn("the render's KMS role %s differs from the backup's %s: it must be allowed to decrypt with every key the data needs",
			strings.Join(got.KMS.Roles, ", "), strings.Join(need.Roles, ", "))
	}
	return true, nil
}

// decodeNode reads a YAML node into a Go type by its JSON tags, as the API
// server would.
func decodeNode(n *yaml.Node, into any) error {
	raw, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	js, err := sigsyaml.YAMLToJSON(raw)
	if err != nil {
		return err
	}
	return json.Unmarshal(js, into)
}

func providerName(k manifest.KMSKey) string {
	if k.ProviderName == "" {
		return "unknown"
	}
	return k.ProviderName
}

// putKeyHint says where a render names a key of the provider.
func putKeyHint(provider, keyID string) string {
	switch provider {
	case string(hyperv1.AWS):
		return fmt.Sprintf("set spec.secretEncryption.kms.aws.activeKey.arn to %s, or, to rotate to a new active key, set backupKey.arn to it", keyID)
	case string(hyperv1.AZURE):
		return fmt.Sprintf("set spec.secretEncryption.kms.azure.activeKey (keyVaultName/keyName/keyVersion %s), or, to rotate to a new active key, backupKey", keyID)
	case string(hyperv1.IBMCloud):
		return fmt.Sprintf("keep the key %s in spec.secretEncryption.kms.ibmcloud.keyList", keyID)
	}
	return "name it in spec.secretEncryption.kms"
}

// setKMSHint says how a render names every key of the backup.
func setKMSHint(need *manifest.KMS) string {
	var ids []string
	for _, k := range need.Keys {
		ids = append(ids, k.Role+" "+k.ID)
	}
	switch need.Provider {
	case string(hyperv1.AWS):
		s := "spec.secretEncryption.type: kms, kms.provider: AWS, kms.aws.activeKey.arn"
		if len(need.Keys) > 1 {
			s += " and kms.aws.backupKey.arn"
		}
		return fmt.Sprintf("%s (%s), kms.aws.region %s and kms.aws.auth.awsKms, a role allowed to use them",
			s, strings.Join(ids, ", "), need.Region)
	default:
		return fmt.Sprintf("spec.secretEncryption.type: kms with kms.provider: %s naming the keys %s", need.Provider, strings.Join(ids, ", "))
	}
}
