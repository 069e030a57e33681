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
// checked offline: the key is in the KMS. This is the seam for the
// manifest's KMS configuration: once the manifest records the provider
// names a backup was taken with, compare them here with the names the data
// carries and report a provider the restored cluster would not have.
func kmsFindings(kms map[string]int, _ *manifest.Manifest) []string {
	var out []string
	for _, p := range sortedKeys(kms) {
		version, name, _ := strings.Cut(p, ":")
		out = append(out, fmt.Sprintf("%d Secrets are encrypted by KMS provider %q (%s): a KMS key cannot be checked offline; the restored cluster must name the same KMS key", kms[p], name, version))
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
