package restore

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// Options say what to restore into the render.
type Options struct {
	// HostedCluster picks the HostedCluster to patch, as "name" or
	// "namespace/name"; it is required when the render holds several.
	HostedCluster string
	// SnapshotURL is the presigned GET URL of the snapshot. It is a secret:
	// anyone holding it can read the whole etcd until it expires, so it never
	// appears in an error or in the Report.
	SnapshotURL string
	// Secrets are the key bundle's Secrets, as manifest.DecodeKeyBundle
	// returns them, each with its hcpsnap.io/role annotation.
	Secrets []corev1.Secret
	// Force replaces a restoreSnapshotURL the HostedCluster already has.
	Force bool
	// Encryption is the backup manifest's record of how the data is
	// encrypted; nil for a manifest written before hcpsnap recorded it, in
	// which case aescbc is assumed, as the key bundle must hold an AES key.
	Encryption *manifest.Encryption
	// MissingShards are the etcd shards the backup left out (manifest
	// missingShards, backup --without-shards): the restored cluster lacks
	// their resources, which Patch says in a warning.
	MissingShards []manifest.Shard
	// Shards are the backup's etcd shard snapshots (manifest shards).
	// HyperShift's API has no restoreSnapshotURL for a shard, so Patch
	// cannot restore them and says so in a warning.
	Shards []manifest.ShardSnapshot
}

// Report says what Patch changed, for the user. It holds names only: never
// a secret value, never the URL.
type Report struct {
	// HostedCluster is the patched HostedCluster, as namespace/name.
	HostedCluster string
	// EncryptionSecret is the Secret named by
	// spec.secretEncryption.aescbc.activeKey, as namespace/name.
	EncryptionSecret string
	// EncryptionKeyAction is what happened to that Secret's data key "key":
	// "added" (the Secret was created), "set" (the render's Secret had no
	// key), "replaced" (the render's differing key was replaced, which is the
	// usual case as the hypershift CLI renders a fresh random key) or
	// "unchanged".
	EncryptionKeyAction string
	// BackupKeySecret and BackupKeyAction are the same for
	// spec.secretEncryption.aescbc.backupKey; empty when it was not handled.
	BackupKeySecret string
	BackupKeyAction string
	// AddedNamespace is the control plane namespace, when a Namespace
	// document was added for the control plane Secrets: they cannot be
	// applied before it exists, and the HyperShift operator adopts it.
	AddedNamespace string
	// AddedSecrets are the other Secrets of the bundle added to the render
	// (namespace/name), in the new control plane namespace.
	AddedSecrets []string
	// ReplacedURL is true when an existing restoreSnapshotURL was replaced
	// (Options.Force).
	ReplacedURL bool
	// Encryption is the secret encryption the render keeps: "aescbc" or
	// "kms".
	Encryption string `json:",omitempty"`
	// KMSProvider and KMSKeys are, for a kms render, the provider and the
	// key identifiers (for AWS, key ARNs) the backed-up data needs, which the
	// render names; the render's KMS configuration is left as it is.
	KMSProvider string   `json:",omitempty"`
	KMSKeys     []string `json:",omitempty"`
	// MissingShards names the etcd shards whose data the backup does not
	// hold, with their resources ("events (events)"); empty for a backup of
	// a cluster without shards.
	MissingShards []string `json:",omitempty"`
	// UnrestoredShards names the etcd shards whose snapshot the backup
	// holds but the render cannot restore ("events (events)"): HyperShift's
	// API has no restoreSnapshotURL for a shard.
	UnrestoredShards []string `json:",omitempty"`
	// Warnings are things the user should know that did not stop the patch.
	Warnings []string
}

// Key actions of Report.EncryptionKeyAction and Report.BackupKeyAction.
const (
	KeyAdded     = "added"
	KeySet       = "set"
	KeyReplaced  = "replaced"
	KeyUnchanged = "unchanged"
)

// The HyperShift names this patcher relies on.
const (
	hostedClusterAPIVersion = "hypershift.openshift.io/v1beta1"
	hostedClusterKind       = "HostedCluster"
	// aesKeyDataKey is the data key of the AES-CBC key Secret
	// (hyperv1.AESCBCKeySecretKey).
	aesKeyDataKey = "key"
	// maxURLLength is the CRD's maxLength of a restoreSnapshotURL item.
	maxURLLength = 1024
)

// object is one Kubernetes object of the render: a document, or an item of
// a List document.
type object struct {
	node *yaml.Node // the object's mapping
	seg  *segment   // the document that holds it; nil for an added one
	item int        // 1-based index in the List's items, 0 for a document

	apiVersion, kind, name, namespace string
}

func (o *object) ref() string { return o.namespace + "/" + o.name }

// where names the object's place in the render, for messages.
func (o *object) where() string {
	if o.seg == nil {
		return "added by hcpsnap"
	}
	if o.item > 0 {
		return fmt.Sprintf("render document %d item %d", o.seg.num, o.item)
	}
	return fmt.Sprintf("render document %d", o.seg.num)
}

// patcher holds the parsed render while Patch edits it.
type patcher struct {
	segs    []segment
	objects []*object
	list    *yaml.Node   // the items of the only document, when it is a List: new objects go there
	added   []*yaml.Node // new documents, when the render is a stream
	rep     Report
}

// Patch rewrites a render of `hypershift create cluster ... --render` (a
// stream of YAML documents, or one List) so that the HostedCluster restores
// the snapshot at opts.SnapshotURL with the key bundle's encryption key, and
// returns the new render and what changed. Documents it does not change are
// returned byte for byte. Every error is one line that says what is wrong
// with the input and how to go on, and holds neither the URL nor a secret.
func Patch(render []byte, opts Options) (out []byte, rep Report, err error) {
	r := newRedactor(opts)
	defer func() {
		if err != nil {
			out, rep, err = nil, Report{}, r.error(err)
		} else {
			rep = r.report(rep)
		}
	}()
	if err := checkURL(opts.SnapshotURL); err != nil {
		return nil, Report{}, err
	}
	segs, err := parseStream(render)
	if err != nil {
		return nil, Report{}, err
	}
	p := &patcher{segs: segs}
	p.collect()
	hc, err := p.pickHostedCluster(opts.HostedCluster)
	if err != nil {
		return nil, Report{}, err
	}
	p.rep.HostedCluster = hc.ref()
	if err := p.checkHostedCluster(hc, opts); err != nil {
		return nil, Report{}, err
	}
	b, err := readBundle(opts.Secrets)
	if err != nil {
		return nil, Report{}, err
	}
	kms, err := p.checkKMS(hc, opts.Encryption, b)
	if err != nil {
		return nil, Report{}, err
	}
	var enc encryption
	if !kms {
		if enc, err = p.checkAESCBC(hc); err != nil {
			return nil, Report{}, err
		}
		if err := b.requireAES(); err != nil {
			return nil, Report{}, err
		}
	}
	p.setRestoreURL(hc, opts.SnapshotURL)
	if kms {
		p.rep.Encryption = manifest.EncryptionKMS
		for _, ref := range append(b.aesRefs, b.ignored...) {
			p.warn("the key bundle's Secret %q is not added: the backed-up data is encrypted with KMS, and an AES key in the render would not read it", ref)
		}
	} else {
		p.rep.Encryption = manifest.EncryptionAESCBC
		if err := p.restoreKeys(hc, enc, b); err != nil {
			return nil, Report{}, err
		}
	}
	p.addControlPlaneSecrets(hc, b)
	p.warnMissingShards(opts.MissingShards)
	p.warnUnrestoredShards(opts.Shards)
	if out, err = joinStream(p.segs, p.added); err != nil {
		return nil, Report{}, err
	}
	return out, p.rep, nil
}

// warnMissingShards says plainly that a backup taken without the cluster's
// etcd shards restores a cluster without their data: hcpsnap cannot put it
// back, and HyperShift's API has no restoreSnapshotURL for a shard yet.
func (p *patcher) warnMissingShards(shards []manifest.Shard) {
	if len(shards) == 0 {
		return
	}
	for _, sh := range shards {
		p.rep.MissingShards = append(p.rep.MissingShards, sh.Describe())
	}
	p.warn("the backup was taken without the cluster's etcd shards %s (backup --without-shards): the restored cluster will lack every object of those resources, which lived in the shards' own etcd and are not in this snapshot",
		manifest.DescribeShards(shards))
}

// warnUnrestoredShards says plainly that the shard snapshots of a backup
// are not restored: HyperShift's API sets restoreSnapshotURL for the
// default etcd only (spec.etcd.managed.storage), and has no such field for
// a shard, so the restored cluster starts its shards empty. The snapshots
// stay in the bucket, named here, for a restore by hand with etcdutl.
func (p *patcher) warnUnrestoredShards(shards []manifest.ShardSnapshot) {
	if len(shards) == 0 {
		return
	}
	var keys []string
	for _, sh := range shards {
		p.rep.UnrestoredShards = append(p.rep.UnrestoredShards, sh.Describe())
		keys = append(keys, sh.Snapshot.Key)
	}
	p.warn("the backup holds snapshots of the etcd shards %s, but HyperShift's API has no restoreSnapshotURL for a shard (only spec.etcd.managed.storage has one): the restored cluster starts those shards empty and lacks every object of their resources; their snapshots stay in the bucket (%s) for a restore by hand with etcdutl",
		describeShardSnapshots(shards), strings.Join(keys, ", "))
}

func describeShardSnapshots(shards []manifest.ShardSnapshot) string {
	out := make([]string, len(shards))
	for i, sh := range shards {
		out[i] = sh.Describe()
	}
	return strings.Join(out, ", ")
}

// checkURL refuses a URL the HostedCluster CRD or the YAML would not carry
// as given, without quoting it.
func checkURL(u string) error {
	switch {
	case u == "":
		return fmt.Errorf("no snapshot URL: presign the snapshot object of the backup and pass its URL")
	case len(u) > maxURLLength:
		return fmt.Errorf("the presigned snapshot URL is %d characters, the HostedCluster CRD allows %d: presign it with credentials that need no session token (the token makes the URL long), or serve the snapshot from a shorter URL",
			len(u), maxURLLength)
	case !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://"):
		return fmt.Errorf("the snapshot URL is not an http(s) URL: pass the presigned GET URL of the snapshot")
	case strings.IndexFunc(u, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("the snapshot URL holds blanks or control characters: pass the presigned URL as it was issued")
	}
	return nil
}

// collect lists the render's objects, looking into List documents.
func (p *patcher) collect() {
	docs := 0
	var onlyList *yaml.Node
	for i := range p.segs {
		s := &p.segs[i]
		if s.doc == nil {
			continue
		}
		docs++
		root := resolve(s.doc.Content[0])
		if !isMap(root) {
			continue
		}
		if str(get(root, "kind")) == "List" && str(get(root, "apiVersion")) == "v1" {
			items := get(root, "items")
			if isNull(items) {
				items = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
				set(root, "items", items)
			}
			if items.Kind != yaml.SequenceNode {
				continue
			}
			onlyList = items
			for j, it := range items.Content {
				if it = resolve(it); isMap(it) {
					p.objects = append(p.objects, newObject(it, s, j+1))
				}
			}
			continue
		}
		p.objects = append(p.objects, newObject(root, s, 0))
	}
	if docs == 1 && onlyList != nil {
		p.list = onlyList
	}
}

func newObject(n *yaml.Node, s *segment, item int) *object {
	md := get(n, "metadata")
	return &object{node: n, seg: s, item: item,
		apiVersion: str(get(n, "apiVersion")), kind: str(get(n, "kind")),
		name: str(get(md, "name")), namespace: str(get(md, "namespace"))}
}

// find returns the object of that kind, namespace and name, or nil.
func (p *patcher) find(apiVersion, kind, namespace, name string) *object {
	for _, o := range p.objects {
		if o.apiVersion == apiVersion && o.kind == kind && o.namespace == namespace && o.name == name {
			return o
		}
	}
	return nil
}

// add appends a new object to the render: into the List, or as a document.
func (p *patcher) add(n *yaml.Node, namespace, name string) {
	if p.list != nil {
		p.list.Content = append(p.list.Content, n)
		for i := range p.segs {
			if p.segs[i].doc != nil {
				p.segs[i].changed = true
			}
		}
	} else {
		p.added = append(p.added, n)
	}
	p.objects = append(p.objects, &object{node: n, apiVersion: str(get(n, "apiVersion")), kind: str(get(n, "kind")),
		namespace: namespace, name: name})
}

// pickHostedCluster returns the HostedCluster to patch.
func (p *patcher) pickHostedCluster(want string) (*object, error) {
	var hcs []*object
	for _, o := range p.objects {
		if o.apiVersion == hostedClusterAPIVersion && o.kind == hostedClusterKind {
			hcs = append(hcs, o)
		}
	}
	if len(hcs) == 0 {
		return nil, fmt.Errorf("the render holds no HostedCluster (%s): pass the output of `hypershift create cluster <platform> ... --render`",
			hostedClusterAPIVersion)
	}
	if want == "" && len(hcs) == 1 {
		return hcs[0], nil
	}
	var match []*object
	for _, o := range hcs {
		if want == o.name || want == o.ref() {
			match = append(match, o)
		}
	}
	if len(match) == 1 {
		return match[0], nil
	}
	names := quotedRefs(hcs)
	switch {
	case want == "":
		return nil, fmt.Errorf("the render holds %d HostedClusters (%s): name the one to restore into with --hosted-cluster", len(hcs), names)
	case len(match) > 1:
		return nil, fmt.Errorf("the render holds several HostedClusters named %q (%s): name the one to restore into with --hosted-cluster namespace/name",
			want, names)
	default:
		return nil, fmt.Errorf("the render holds no HostedCluster %q, only %s: name one of them", want, names)
	}
}

// quotedRefs lists objects as quoted namespace/name, at most ten of them.
func quotedRefs(objs []*object) string {
	var b strings.Builder
	for i, o := range objs {
		if i == 10 {
			fmt.Fprintf(&b, " and %d more", len(objs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", o.ref())
	}
	return b.String()
}

// encryption is what the HostedCluster says about its AES-CBC keys.
type encryption struct {
	activeKey, backupKey string // Secret names in the HostedCluster's namespace
}

// checkHostedCluster refuses a HostedCluster the restore cannot work with,
// before anything is changed; its encryption is checked apart.
func (p *patcher) checkHostedCluster(hc *object, opts Options) error {
	id := fmt.Sprintf("HostedCluster %q (%s)", hc.ref(), hc.where())
	if hc.name == "" || hc.namespace == "" {
		return fmt.Errorf("%s has no metadata.name or metadata.namespace: the Secrets it needs are namespaced, render it with both", id)
	}
	spec := get(hc.node, "spec")
	if !isMap(spec) {
		return fmt.Errorf("%s has no spec: render it again with `hypershift create cluster <platform> ... --render`", id)
	}
	if etcd := get(spec, "etcd"); !isNull(etcd) {
		if !isMap(etcd) {
			return fmt.Errorf("%s: spec.etcd is not a mapping: fix the render", id)
		}
		if mt := str(get(etcd, "managementType")); mt != "Managed" {
			return fmt.Errorf("%s: spec.etcd.managementType is %q, not Managed: HyperShift restores a snapshot only into the etcd it manages; render the cluster with managed etcd",
				id, mt)
		}
		if !isMap(path(etcd, "managed", "storage")) {
			return fmt.Errorf("%s: spec.etcd.managed.storage is missing: the CRD requires it for Managed etcd; render the cluster again", id)
		}
		if u := path(etcd, "managed", "storage", "restoreSnapshotURL"); hasURL(u) && !opts.Force {
			return fmt.Errorf("%s already has a spec.etcd.managed.storage.restoreSnapshotURL: render the cluster again, or use --force to replace it", id)
		}
	}
	return nil
}

// checkAESCBC reads the AES-CBC key Secrets the HostedCluster names, for a
// backup encrypted with an AES key.
func (p *patcher) checkAESCBC(hc *object) (encryption, error) {
	id := fmt.Sprintf("HostedCluster %q (%s)", hc.ref(), hc.where())
	se := get(get(hc.node, "spec"), "secretEncryption")
	enc := encryption{
		activeKey: str(path(se, "aescbc", "activeKey", "name")),
		backupKey: str(path(se, "aescbc", "backupKey", "name")),
	}
	if enc.activeKey == "" {
		return encryption{}, fmt.Errorf("%s has no spec.secretEncryption.aescbc.activeKey: the restored etcd holds Secrets encrypted with the backed-up AES key and cannot be read without it; render the cluster with aescbc secret encryption (the hypershift CLI does by default)",
			id)
	}
	if enc.backupKey == enc.activeKey {
		enc.backupKey = ""
	}
	return enc, nil
}

// hasURL tells whether a restoreSnapshotURL value holds a URL.
func hasURL(n *yaml.Node) bool {
	switch {
	case isNull(n):
		return false
	case n.Kind == yaml.SequenceNode:
		return len(n.Content) > 0
	case n.Kind == yaml.ScalarNode:
		return n.Value != ""
	}
	return true
}

// setRestoreURL sets spec.etcd.managed.storage.restoreSnapshotURL to the
// one URL, writing the CRD's default etcd when the render has none.
func (p *patcher) setRestoreURL(hc *object, url string) {
	spec := get(hc.node, "spec")
	etcd := get(spec, "etcd")
	if isNull(etcd) {
		// The CRD's default for spec.etcd, written out so that the URL has
		// a place.
		etcd = mapNode(
			"managed", mapNode("storage", mapNode(
				"persistentVolume", mapNode("size", "8Gi"),
				"type", "PersistentVolume")),
			"managementType", "Managed")
		set(spec, "etcd", etcd)
	}
	storage := path(etcd, "managed", "storage")
	p.rep.ReplacedURL = hasURL(get(storage, "restoreSnapshotURL"))
	set(storage, "restoreSnapshotURL", &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq",
		Content: []*yaml.Node{strNode(url)}})
	hc.seg.changed = true
}
