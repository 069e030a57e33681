package drill

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// judge turns what the restored etcd holds into checks and findings.
func judge(res *Result, m *manifest.Manifest) {
	c := res.Contents
	rev := Check{Name: "revision", OK: res.Revision == res.ExpectedRevision,
		Detail: fmt.Sprintf("%d = the manifest's %d + %d (etcd-init's --bump-revision)", res.Revision, m.Etcd.Revision, int64(RevisionBump))}
	if !rev.OK {
		rev.Detail = fmt.Sprintf("%d, want the manifest's %d + %d = %d: the snapshot is not the one the manifest describes", res.Revision, m.Etcd.Revision, int64(RevisionBump), res.ExpectedRevision)
		rev.fail = ErrUnusable
	}
	res.Checks = append(res.Checks, rev)
	res.Checks = append(res.Checks, keysCheck(c.Keys, m.Etcd))
	res.Checks = append(res.Checks, secretsCheck(c.Secrets))
	if len(c.Secrets.KMS) > 0 {
		res.Checks = append(res.Checks, kmsCheck(c.Secrets.KMS, m.Encryption))
	}
	res.Findings = append(res.Findings, findings(c.Secrets, m)...)
}

// keysCheck compares the live keys with the manifest's TotalKeys. The 3.5
// tools count every key of every bolt bucket (metadata and old revisions
// too), so the live keys can only be as many or fewer; 3.6's etcdutl counts
// the live keys, which must then be equal (seen on 3.6.5 snapshots). A
// streamed snapshot records no TotalKeys.
func keysCheck(live int64, e manifest.Etcd) Check {
	ck := Check{Name: "keys", OK: true}
	switch {
	case e.TotalKeys == 0:
		ck.Detail = fmt.Sprintf("%d live keys (the manifest records no key count: a streamed snapshot)", live)
	case live > e.TotalKeys:
		ck.OK = false
		ck.Detail = fmt.Sprintf("%d live keys, more than the %d keys the manifest counted: the snapshot is not the one the manifest describes", live, e.TotalKeys)
	case live == e.TotalKeys:
		ck.Detail = fmt.Sprintf("%d live keys = the manifest's %d", live, e.TotalKeys)
	case e.StorageVersion == "":
		ck.Detail = fmt.Sprintf("%d live keys; the manifest's %d counts every key of every bucket (etcd 3.5 tools), so fewer is expected", live, e.TotalKeys)
	default:
		ck.OK = false
		ck.Detail = fmt.Sprintf("%d live keys, the manifest's %d live keys (etcd %s tools): the snapshot is not the one the manifest describes", live, e.TotalKeys, e.StorageVersion)
	}
	if !ck.OK {
		ck.fail = ErrUnusable
	}
	return ck
}

// secretsCheck passes when every aescbc Secret decrypted.
func secretsCheck(s Secrets) Check {
	ck := Check{Name: "secrets", OK: true}
	switch {
	case s.AESCBC == 0:
		ck.Detail = fmt.Sprintf("%d Secrets, none encrypted with aescbc: no key to check", s.Total)
	case s.Unchecked != "":
		ck.OK = false
		ck.Detail = fmt.Sprintf("%d Secrets are encrypted with aescbc (key %s) but cannot be checked: %s", s.AESCBC, strings.Join(s.AESCBCKeyNames, ", "), s.Unchecked)
	case s.Decrypted < s.AESCBC:
		ck.OK = false
		ck.Detail = fmt.Sprintf("the key bundle decrypts %d of %d aescbc Secrets; the first that fails is %s (%s)", s.Decrypted, s.AESCBC, s.FirstFailure, s.FailureReason)
	default:
		ck.Detail = fmt.Sprintf("the key bundle decrypts %d of %d aescbc Secrets (key %s)", s.Decrypted, s.AESCBC, strings.Join(s.AESCBCKeyNames, ", "))
	}
	if !ck.OK {
		ck.fail = ErrKeyMismatch
	}
	return ck
}

// findings are what a person should know that does not fail the drill.
func findings(s Secrets, m *manifest.Manifest) []string {
	var out []string
	if s.Plain > 0 {
		out = append(out, fmt.Sprintf("%d of %d Secrets are stored without encryption (first: %s)", s.Plain, s.Total, s.FirstPlain))
	}
	out = append(out, kmsFindings(s.KMS, m)...)
	for _, p := range sortedKeys(s.Unknown) {
		out = append(out, fmt.Sprintf("%d Secrets are encrypted with provider %q, which the drill cannot check", s.Unknown[p], p))
	}
	return out
}

// kmsFindings names the KMS providers the data names. They cannot be
// checked offline: the keys are in the KMS.
func kmsFindings(kms map[string]int, _ *manifest.Manifest) []string {
	var out []string
	for _, p := range sortedKeys(kms) {
		version, name, _ := strings.Cut(p, ":")
		note := fmt.Sprintf("%d Secrets are encrypted by KMS provider %q (%s): a KMS key cannot be checked offline; the restored cluster must name the same key and a role that may use it", kms[p], name, version)
		if version == "kms/v1" {
			note += "; they were written with KMS API v1, which a newly configured cluster (KMS v2) may not read"
		}
		out = append(out, note)
	}
	return out
}

// kmsCheck compares the KMS providers the data names with the keys the
// manifest recorded (manifest.KMS): every provider name must be one of the
// recorded keys', or a cluster restored with the recorded configuration
// cannot read those Secrets. A manifest written before hcpsnap recorded the
// encryption says nothing, and the check only reports the names.
func kmsCheck(kms map[string]int, enc *manifest.Encryption) Check {
	names := sortedKeys(kms)
	ck := Check{Name: "kms", OK: true}
	if enc == nil {
		ck.Detail = fmt.Sprintf("the data names KMS provider(s) %s; the manifest records no encryption (an older backup): compare them with the restored cluster's keys by hand", strings.Join(providerNames(names), ", "))
		return ck
	}
	recorded := map[string]manifest.KMSKey{}
	if enc.KMS != nil {
		for _, k := range enc.KMS.Keys {
			recorded[k.ProviderName] = k
		}
	}
	var missing, found []string
	for _, n := range names {
		_, name, _ := strings.Cut(n, ":")
		if k, ok := recorded[name]; ok {
			found = append(found, fmt.Sprintf("%s (%s key %s)", name, k.Role, k.ID))
		} else {
			missing = append(missing, fmt.Sprintf("%s (%d Secrets)", name, kms[n]))
		}
	}
	switch {
	case len(missing) > 0:
		ck.OK, ck.fail = false, ErrKeyMismatch
		ck.Detail = fmt.Sprintf("the data names KMS provider(s) %s that the manifest's %s encryption does not record: a cluster restored with the recorded keys cannot read those Secrets", strings.Join(missing, ", "), enc.Type)
	default:
		ck.Detail = fmt.Sprintf("every KMS provider the data names is a recorded key: %s (not decrypted: that needs the KMS)", strings.Join(found, ", "))
	}
	return ck
}

func providerNames(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		_, out[i], _ = strings.Cut(k, ":")
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// verdict returns the first failed check's error class with its detail.
func verdict(res *Result) error {
	for _, c := range res.Checks {
		if !c.OK {
			return fmt.Errorf("%w: %s: %s", c.fail, c.Name, c.Detail)
		}
	}
	return nil
}
