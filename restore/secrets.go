package restore

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// bundle is the key bundle sorted by role.
type bundle struct {
	activeKey    []byte
	activeRef    string
	backupKey    []byte   // nil when the bundle holds no backup key
	aesRefs      []string // the AES key Secrets, as namespace/name
	controlPlane []corev1.Secret
	ignored      []string // Secrets without a role this patcher knows
}

// readBundle sorts the bundle's Secrets by role and checks that it holds
// at most one active and one backup AES key; requireAES checks that the
// active one is there.
func readBundle(secrets []corev1.Secret) (bundle, error) {
	var b bundle
	var actives, backups []string
	for _, s := range secrets {
		ref := s.Namespace + "/" + s.Name
		switch s.Annotations[manifest.RoleAnnotation] {
		case manifest.RoleActiveKey:
			actives = append(actives, ref)
			b.aesRefs = append(b.aesRefs, ref)
			b.activeKey, b.activeRef = secretValue(s, aesKeyDataKey), ref
		case manifest.RoleBackupKey:
			backups = append(backups, ref)
			b.aesRefs = append(b.aesRefs, ref)
			b.backupKey = secretValue(s, aesKeyDataKey)
		case manifest.RoleControlPlane:
			if s.Name == "" {
				b.ignored = append(b.ignored, ref)
				continue
			}
			b.controlPlane = append(b.controlPlane, s)
		default:
			b.ignored = append(b.ignored, ref)
		}
	}
	switch {
	case len(actives) > 1:
		return b, fmt.Errorf("the key bundle holds %d Secrets with %s=%s (%s), want one: use the key bundle written by the backup, unedited",
			len(actives), manifest.RoleAnnotation, manifest.RoleActiveKey, strings.Join(quoteAll(actives), ", "))
	case len(backups) > 1:
		return b, fmt.Errorf("the key bundle holds %d Secrets with %s=%s, want at most one: use the key bundle written by the backup, unedited",
			len(backups), manifest.RoleAnnotation, manifest.RoleBackupKey)
	}
	return b, nil
}

// hasAES tells whether the bundle holds an active AES key Secret.
func (b bundle) hasAES() bool { return b.activeRef != "" }

// requireAES refuses a bundle without a usable active AES key.
func (b bundle) requireAES() error {
	switch {
	case !b.hasAES():
		return fmt.Errorf("the key bundle holds no Secret with %s=%s: without the backed-up AES key the restored etcd cannot be read; use the key bundle written by the same backup as the snapshot",
			manifest.RoleAnnotation, manifest.RoleActiveKey)
	case len(b.activeKey) == 0:
		return fmt.Errorf("the key bundle's %s Secret %q has no data key %q: use the key bundle written by the same backup as the snapshot",
			manifest.RoleActiveKey, b.activeRef, aesKeyDataKey)
	}
	return nil
}

// secretValue returns a Secret's value for key, as the API server would
// store it: stringData wins over data.
func secretValue(s corev1.Secret, key string) []byte {
	if v, ok := s.StringData[key]; ok {
		return []byte(v)
	}
	return s.Data[key]
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// restoreKeys puts the backed-up AES keys into the Secrets the HostedCluster
// names, in its namespace.
func (p *patcher) restoreKeys(hc *object, enc encryption, b bundle) error {
	action, err := p.putKey(hc.namespace, enc.activeKey, b.activeKey)
	if err != nil {
		return err
	}
	p.rep.EncryptionSecret = hc.namespace + "/" + enc.activeKey
	p.rep.EncryptionKeyAction = action
	switch {
	case enc.backupKey != "" && b.backupKey != nil:
		action, err := p.putKey(hc.namespace, enc.backupKey, b.backupKey)
		if err != nil {
			return err
		}
		p.rep.BackupKeySecret = hc.namespace + "/" + enc.backupKey
		p.rep.BackupKeyAction = action
	case enc.backupKey != "":
		p.warn("the HostedCluster names the backup key Secret %q but the key bundle holds no backup key: the render's Secret is left as it is",
			hc.namespace+"/"+enc.backupKey)
	case b.backupKey != nil:
		p.warn("the key bundle holds an AES-CBC backup key but the HostedCluster names no spec.secretEncryption.aescbc.backupKey: Secrets still encrypted with that key will not be readable; add a backupKey Secret to the render to keep them")
	}
	for _, ref := range b.ignored {
		p.warn("the key bundle's Secret %q has no role hcpsnap knows: not added", ref)
	}
	return nil
}

// putKey makes the Secret namespace/name hold key in its data key "key",
// and says what it did.
func (p *patcher) putKey(namespace, name string, key []byte) (string, error) {
	o := p.find("v1", "Secret", namespace, name)
	if o == nil {
		p.add(mapNode(
			"apiVersion", "v1",
			"kind", "Secret",
			"metadata", mapNode("name", name, "namespace", namespace),
			"type", string(corev1.SecretTypeOpaque),
			"data", mapNode(aesKeyDataKey, base64.StdEncoding.EncodeToString(key)),
		), namespace, name)
		return KeyAdded, nil
	}
	id := fmt.Sprintf("Secret %q (%s)", o.ref(), o.where())
	data, stringData := get(o.node, "data"), get(o.node, "stringData")
	if !isNull(data) && !isMap(data) || !isNull(stringData) && !isMap(stringData) {
		return "", fmt.Errorf("%s: data or stringData is not a mapping: fix the render", id)
	}
	// The value the API server would store: stringData wins over data.
	var current []byte
	have := false
	if v := get(stringData, aesKeyDataKey); !isNull(v) {
		current, have = []byte(str(v)), true
	} else if v := get(data, aesKeyDataKey); !isNull(v) {
		// An undecodable value simply differs from the key.
		current, _ = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(str(v)), ""))
		have = true
	}
	if have && bytes.Equal(current, key) {
		return KeyUnchanged, nil
	}
	data = child(o.node, "data")
	set(data, aesKeyDataKey, strNode(base64.StdEncoding.EncodeToString(key)))
	if isMap(stringData) {
		del(stringData, aesKeyDataKey)
	}
	if o.seg != nil {
		o.seg.changed = true
	}
	if have {
		return KeyReplaced, nil
	}
	return KeySet, nil
}

// droppedAnnotations are annotations that must not follow a Secret into the
// new cluster: hcpsnap's own role, and kubectl's copy of the old object,
// which holds the Secret's data.
var droppedAnnotations = []string{manifest.RoleAnnotation, corev1.LastAppliedConfigAnnotation}

// controlPlaneNamespace is the namespace HyperShift creates for the hosted
// control plane of a HostedCluster (its namespace, a dash, its name with
// dots turned into dashes).
func controlPlaneNamespace(namespace, name string) string {
	return namespace + "-" + strings.ReplaceAll(name, ".", "-")
}

// addControlPlaneSecrets adds the bundle's control plane Secrets (root-ca,
// etcd-signer, sa-signing-key) to the new control plane namespace, unless
// the render already has them. HyperShift keeps a valid CA or signing key it
// finds there, so the restored data stays consistent with its signers.
func (p *patcher) addControlPlaneSecrets(hc *object, b bundle) {
	ns := controlPlaneNamespace(hc.namespace, hc.name)
	var todo []corev1.Secret
	seen := map[string]bool{}
	for _, s := range b.controlPlane {
		if seen[s.Name] {
			p.warn("the key bundle holds the control plane Secret %q twice: the first is added", s.Name)
			continue
		}
		seen[s.Name] = true
		if p.find("v1", "Secret", ns, s.Name) != nil {
			p.warn("the render already has the Secret %q: the key bundle's is not added", ns+"/"+s.Name)
			continue
		}
		todo = append(todo, s)
	}
	if len(todo) == 0 {
		return
	}
	if p.find("v1", "Namespace", "", ns) == nil {
		p.add(mapNode("apiVersion", "v1", "kind", "Namespace", "metadata", mapNode("name", ns)), "", ns)
		p.rep.AddedNamespace = ns
	}
	for _, s := range todo {
		p.add(secretNode(s, ns), ns, s.Name)
		p.rep.AddedSecrets = append(p.rep.AddedSecrets, ns+"/"+s.Name)
	}
}

// secretNode writes a bundle Secret as a new object in namespace. It is
// built from the fields a new object may carry (name, labels, annotations,
// type, immutable, data), so none of the server-set metadata of the old
// object (uid, resourceVersion, creationTimestamp, managedFields,
// ownerReferences, ...) follows it, nor the annotations that must not.
func secretNode(s corev1.Secret, namespace string) *yaml.Node {
	md := mapNode("name", s.Name, "namespace", namespace)
	if len(s.Labels) > 0 {
		set(md, "labels", stringMap(s.Labels))
	}
	ann := map[string]string{}
	for k, v := range s.Annotations {
		ann[k] = v
	}
	for _, k := range droppedAnnotations {
		delete(ann, k)
	}
	if len(ann) > 0 {
		set(md, "annotations", stringMap(ann))
	}
	n := mapNode("apiVersion", "v1", "kind", "Secret", "metadata", md)
	if s.Type != "" {
		set(n, "type", strNode(string(s.Type)))
	}
	if s.Immutable != nil && *s.Immutable {
		set(n, "immutable", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
	}
	if len(s.Data) > 0 {
		data := map[string]string{}
		for k, v := range s.Data {
			data[k] = base64.StdEncoding.EncodeToString(v)
		}
		set(n, "data", stringMap(data))
	}
	if len(s.StringData) > 0 {
		set(n, "stringData", stringMap(s.StringData))
	}
	return n
}

func (p *patcher) warn(format string, args ...any) {
	p.rep.Warnings = append(p.rep.Warnings, fmt.Sprintf(format, args...))
}

// redactor keeps the URL and the bundle's secret values out of what Patch
// returns, whatever the render holds: a belt to the braces of messages that
// never quote values.
type redactor struct {
	secrets []string
}

// minRedact is the shortest value redacted: shorter ones would mangle
// messages while hiding nothing.
const minRedact = 8

func newRedactor(opts Options) *redactor {
	r := &redactor{}
	addValue := func(v string) {
		if len(v) >= minRedact {
			r.secrets = append(r.secrets, v)
		}
	}
	addValue(opts.SnapshotURL)
	if _, q, ok := strings.Cut(opts.SnapshotURL, "?"); ok {
		addValue(q)
	}
	for _, s := range opts.Secrets {
		for _, v := range s.Data {
			addValue(string(v))
			addValue(base64.StdEncoding.EncodeToString(v))
		}
		for _, v := range s.StringData {
			addValue(v)
			addValue(base64.StdEncoding.EncodeToString([]byte(v)))
		}
	}
	// Longest first, so that a value containing another is hidden whole.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

func (r *redactor) clean(s string) string {
	for _, v := range r.secrets {
		s = strings.ReplaceAll(s, v, "[redacted]")
	}
	return s
}

// error returns err as one line without secrets.
func (r *redactor) error(err error) error {
	return errors.New(strings.Join(strings.Fields(r.clean(err.Error())), " "))
}

// report cleans every string of the Report.
func (r *redactor) report(rep Report) Report {
	for _, p := range []*string{&rep.HostedCluster, &rep.EncryptionSecret, &rep.BackupKeySecret, &rep.AddedNamespace} {
		*p = r.clean(*p)
	}
	for i := range rep.AddedSecrets {
		rep.AddedSecrets[i] = r.clean(rep.AddedSecrets[i])
	}
	for i := range rep.Warnings {
		rep.Warnings[i] = r.clean(rep.Warnings[i])
	}
	return rep
}
