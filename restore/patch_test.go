package restore

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// rendered is a patched render read back the way kubectl reads it.
type rendered struct {
	hostedClusters map[string]hyperv1.HostedCluster
	secrets        map[string]corev1.Secret
	namespaces     []string
	kinds          []string // kind of every object, in order
}

func readRender(t *testing.T, out []byte) rendered {
	t.Helper()
	r := rendered{hostedClusters: map[string]hyperv1.HostedCluster{}, secrets: map[string]corev1.Secret{}}
	var add func(raw []byte)
	add = func(raw []byte) {
		var meta struct {
			Kind     string            `json:"kind"`
			Items    []json.RawMessage `json:"items"`
			Metadata struct{ Name, Namespace string }
		}
		if err := json.Unmarshal(raw, &meta); err != nil {
			t.Fatalf("object: %v", err)
		}
		r.kinds = append(r.kinds, meta.Kind)
		ref := meta.Metadata.Namespace + "/" + meta.Metadata.Name
		switch meta.Kind {
		case "List":
			for _, it := range meta.Items {
				add(it)
			}
		case "HostedCluster":
			var hc hyperv1.HostedCluster
			if err := json.Unmarshal(raw, &hc); err != nil {
				t.Fatalf("HostedCluster: %v", err)
			}
			r.hostedClusters[ref] = hc
		case "Secret":
			var s corev1.Secret
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("Secret: %v", err)
			}
			if _, dup := r.secrets[ref]; dup {
				t.Errorf("Secret %s twice in the output", ref)
			}
			r.secrets[ref] = s
		case "Namespace":
			r.namespaces = append(r.namespaces, meta.Metadata.Name)
		}
	}
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("output is not a YAML stream: %v", err)
		}
		raw, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("output document is not YAML: %v\n%s", err, doc)
		}
		if string(raw) == "null" {
			continue
		}
		add(raw)
	}
	return r
}

// hostedCluster returns the only or the named HostedCluster of the output.
func (r rendered) hostedCluster(t *testing.T, ref string) hyperv1.HostedCluster {
	t.Helper()
	hc, ok := r.hostedClusters[ref]
	if !ok {
		t.Fatalf("no HostedCluster %s in the output", ref)
	}
	return hc
}

func opts() Options {
	return Options{SnapshotURL: testURL, Secrets: testBundle()}
}

var controlPlaneAdded = []string{"clusters-example/root-ca", "clusters-example/etcd-signer", "clusters-example/sa-signing-key"}

func TestPatch(t *testing.T) {
	docs := renderDocs()
	hcWithURL := replace(docHostedCluster, "        type: PersistentVolume\n",
		"        type: PersistentVolume\n        restoreSnapshotURL:\n        - https://old.example.com/snapshot.db\n")
	tests := []struct {
		name   string
		render string
		opts   func(*Options)
		want   Report
		// untouched are documents of render that must come out byte for byte.
		untouched []string
		// check looks at the output further.
		check func(t *testing.T, r rendered, out string)
	}{{
		name:      "stream",
		render:    stream(docs...),
		want:      Report{EncryptionKeyAction: KeyReplaced, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
		untouched: []string{docHeader, docNamespace, docPullSecret, docSSHKey, docNodePool},
		check: func(t *testing.T, r rendered, out string) {
			// The kept documents, then the changed, then the added, in order.
			want := []string{"Namespace", "Secret", "Secret", "Secret", "HostedCluster", "NodePool",
				"Namespace", "Secret", "Secret", "Secret"}
			if !slices.Equal(r.kinds, want) {
				t.Errorf("kinds = %v, want %v", r.kinds, want)
			}
			for _, c := range []string{"# etcd keeps its data on gp3 volumes", "# pinned to the backed-up version"} {
				if !strings.Contains(out, c) {
					t.Errorf("the comment %q of the HostedCluster was lost", c)
				}
			}
		},
	}, {
		name:   "List",
		render: listOf(docs...),
		want:   Report{EncryptionKeyAction: KeyReplaced, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
		check: func(t *testing.T, r rendered, out string) {
			if r.kinds[0] != "List" || len(r.kinds) != 11 {
				t.Errorf("kinds = %v, want one List of 10 items", r.kinds)
			}
			for _, c := range []string{"# the render as one List", "# the pull secret from console.redhat.com",
				"# pinned to the backed-up version", "# scaled up after the restore"} {
				if !strings.Contains(out, c) {
					t.Errorf("the comment %q was lost", c)
				}
			}
		},
	}, {
		name:      "encryption Secret missing",
		render:    stream(docNamespace, docPullSecret, docSSHKey, docHostedCluster, docNodePool),
		want:      Report{EncryptionKeyAction: KeyAdded, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
		untouched: []string{docNamespace, docPullSecret, docSSHKey, docNodePool},
		check: func(t *testing.T, r rendered, out string) {
			s := r.secrets["clusters/example-etcd-encryption-key"]
			if s.Type != corev1.SecretTypeOpaque || len(s.Labels)+len(s.Annotations) > 0 {
				t.Errorf("added Secret = %+v, want a bare Opaque Secret", s.ObjectMeta)
			}
		},
	}, {
		name:      "encryption Secret already holds the key",
		render:    stream(docNamespace, replace(docEncryptionKey, b64(renderKey), b64(testKey)), docHostedCluster),
		want:      Report{EncryptionKeyAction: KeyUnchanged, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
		untouched: []string{docNamespace, replace(docEncryptionKey, b64(renderKey), b64(testKey))},
	}, {
		name:   "encryption Secret without a key",
		render: stream(replace(docEncryptionKey, "data:\n  key: "+b64(renderKey)+"\n", "data: {}\n"), docHostedCluster),
		want:   Report{EncryptionKeyAction: KeySet, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
	}, {
		name:   "encryption Secret with neither data nor stringData",
		render: stream(replace(docEncryptionKey, "data:\n  key: "+b64(renderKey)+"\n", ""), docHostedCluster),
		want:   Report{EncryptionKeyAction: KeySet, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
	}, {
		name: "encryption Secret in stringData with another key",
		render: stream(replace(docEncryptionKey, "data:\n  key: "+b64(renderKey)+"\n",
			"stringData:\n  key: not-the-key-of-the-backup\n  other: kept\n"), docHostedCluster),
		want: Report{EncryptionKeyAction: KeyReplaced, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
		check: func(t *testing.T, r rendered, out string) {
			s := r.secrets["clusters/example-etcd-encryption-key"]
			if _, ok := s.StringData["key"]; ok || s.StringData["other"] != "kept" {
				t.Errorf("stringData = %v, want only other (stringData would win over data)", s.StringData)
			}
		},
	}, {
		name: "encryption Secret in stringData with the key",
		render: stream(replace(docEncryptionKey, "data:\n  key: "+b64(renderKey)+"\n",
			"stringData:\n  key: "+string(testKeyPrintable)+"\n"), docHostedCluster),
		opts: func(o *Options) { o.Secrets = printableKeyBundle() },
		want: Report{EncryptionKeyAction: KeyUnchanged, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
	}, {
		name: "backup key named by the HostedCluster",
		render: stream(docEncryptionKey, replace(docHostedCluster, "    type: aescbc\n",
			"      backupKey:\n        name: example-etcd-encryption-key-backup\n    type: aescbc\n")),
		want: Report{EncryptionKeyAction: KeyReplaced, BackupKeySecret: "clusters/example-etcd-encryption-key-backup",
			BackupKeyAction: KeyAdded, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
		check: func(t *testing.T, r rendered, out string) {
			if got := r.secrets["clusters/example-etcd-encryption-key-backup"].Data["key"]; !bytes.Equal(got, backupKey) {
				t.Errorf("backup key Secret does not hold the backed-up backup key")
			}
		},
	}, {
		name:   "existing URL replaced with force",
		render: stream(docEncryptionKey, hcWithURL),
		opts:   func(o *Options) { o.Force = true },
		want: Report{EncryptionKeyAction: KeyReplaced, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded,
			ReplacedURL: true},
	}, {
		name: "one of several HostedClusters",
		render: stream(docEncryptionKey, docHostedCluster, replace(replace(docHostedCluster, "name: example\n", "name: other\n"),
			"name: example-etcd-encryption-key", "name: other-etcd-encryption-key")),
		opts:      func(o *Options) { o.HostedCluster = "clusters/other" },
		want:      Report{HostedCluster: "clusters/other", EncryptionSecret: "clusters/other-etcd-encryption-key", EncryptionKeyAction: KeyAdded, AddedNamespace: "clusters-other", AddedSecrets: []string{"clusters-other/root-ca", "clusters-other/etcd-signer", "clusters-other/sa-signing-key"}},
		untouched: []string{docEncryptionKey, docHostedCluster},
	}, {
		name: "control plane Secret and namespace already rendered",
		render: stream(docHostedCluster, docEncryptionKey,
			"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: clusters-example\n",
			"apiVersion: v1\nkind: Secret\nmetadata:\n  name: root-ca\n  namespace: clusters-example\ndata:\n  ca.crt: Y2E=\n"),
		want: Report{EncryptionKeyAction: KeyReplaced,
			AddedSecrets: []string{"clusters-example/etcd-signer", "clusters-example/sa-signing-key"}},
		check: func(t *testing.T, r rendered, out string) {
			if string(r.secrets["clusters-example/root-ca"].Data["ca.crt"]) != "ca" {
				t.Errorf("the render's root-ca was replaced")
			}
		},
	}, {
		name:   "no etcd: the CRD default is written",
		render: stream(docEncryptionKey, replace(docHostedCluster, "  etcd:\n    managed:\n      storage:\n        persistentVolume:\n          size: 8Gi\n          storageClassName: gp3-csi\n        type: PersistentVolume\n    managementType: Managed\n", "")),
		want:   Report{EncryptionKeyAction: KeyReplaced, AddedNamespace: "clusters-example", AddedSecrets: controlPlaneAdded},
		check: func(t *testing.T, r rendered, out string) {
			st := r.hostedCluster(t, "clusters/example").Spec.Etcd.Managed.Storage
			if st.Type != hyperv1.PersistentVolumeEtcdStorage || st.PersistentVolume.Size.String() != "8Gi" {
				t.Errorf("etcd storage = %+v, want the CRD default", st)
			}
		},
	}, {
		name:   "dotted name and CRLF line ends",
		render: strings.ReplaceAll(stream(docNamespace, docEncryptionKey, replace(docHostedCluster, "name: example\n", "name: example.v2\n")), "\n", "\r\n"),
		want: Report{HostedCluster: "clusters/example.v2", EncryptionKeyAction: KeyReplaced, AddedNamespace: "clusters-example-v2",
			AddedSecrets: []string{"clusters-example-v2/root-ca", "clusters-example-v2/etcd-signer", "clusters-example-v2/sa-signing-key"}},
		untouched: []string{strings.ReplaceAll(docHeader+"---\n"+docNamespace, "\n", "\r\n")},
		check: func(t *testing.T, r rendered, out string) {
			if strings.Count(out, "\n") != strings.Count(out, "\r\n") {
				t.Errorf("the output mixes line ends")
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts()
			if tt.opts != nil {
				tt.opts(&o)
			}
			want := tt.want
			if want.HostedCluster == "" {
				want.HostedCluster = "clusters/example"
			}
			if want.EncryptionSecret == "" {
				want.EncryptionSecret = "clusters/example-etcd-encryption-key"
			}
			want.Encryption = manifest.EncryptionAESCBC
			out, rep, err := Patch([]byte(tt.render), o)
			if err != nil {
				t.Fatalf("Patch: %v", err)
			}
			rep.Warnings = nil
			if !equalReports(rep, want) {
				t.Errorf("report = %+v\nwant     %+v", rep, want)
			}
			assertUntouched(t, tt.render, string(out), tt.untouched)
			r := readRender(t, out)
			checkRestore(t, r, want)
			if tt.check != nil {
				tt.check(t, r, string(out))
			}
		})
	}
}

func equalReports(a, b Report) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// assertUntouched checks that every untouched document is in the output
// byte for byte, in its order.
func assertUntouched(t *testing.T, in, out string, untouched []string) {
	t.Helper()
	at := 0
	for _, d := range untouched {
		if !strings.Contains(in, d) {
			t.Fatalf("fixture error: %q not in the input", d[:min(len(d), 40)])
		}
		i := strings.Index(out[at:], d)
		if i < 0 {
			t.Errorf("document not in the output byte for byte, or out of order:\n%s", d)
			continue
		}
		at += i + len(d)
	}
}

// checkRestore checks what every successful patch must give.
func checkRestore(t *testing.T, r rendered, want Report) {
	t.Helper()
	hc := r.hostedCluster(t, want.HostedCluster)
	if hc.Spec.Etcd.ManagementType != hyperv1.Managed || hc.Spec.Etcd.Managed == nil {
		t.Fatalf("etcd = %+v, want Managed", hc.Spec.Etcd)
	}
	if got := hc.Spec.Etcd.Managed.Storage.RestoreSnapshotURL; !slices.Equal(got, []string{testURL}) {
		t.Errorf("restoreSnapshotURL = %q, want the one URL", got)
	}
	if hc.Spec.Release.Image == "" || hc.Spec.Platform.Type == "" {
		t.Errorf("the rest of the spec was lost: %+v", hc.Spec)
	}
	enc, ok := r.secrets[want.EncryptionSecret]
	if !ok {
		t.Fatalf("no Secret %s in the output", want.EncryptionSecret)
	}
	key := enc.Data["key"]
	if v, ok := enc.StringData["key"]; ok {
		key = []byte(v)
	}
	wantKey := testKey
	if want.EncryptionKeyAction == KeyUnchanged && !bytes.Equal(key, testKey) {
		wantKey = testKeyPrintable
	}
	if !bytes.Equal(key, wantKey) {
		t.Errorf("Secret %s does not hold the backed-up key", want.EncryptionSecret)
	}
	for _, ref := range want.AddedSecrets {
		s, ok := r.secrets[ref]
		if !ok {
			t.Errorf("no Secret %s in the output", ref)
			continue
		}
		md := s.ObjectMeta
		if md.UID != "" || md.ResourceVersion != "" || len(md.OwnerReferences) > 0 || len(md.ManagedFields) > 0 {
			t.Errorf("Secret %s keeps server-set metadata: %+v", ref, md)
		}
		if _, ok := md.Annotations[manifest.RoleAnnotation]; ok {
			t.Errorf("Secret %s keeps the %s annotation", ref, manifest.RoleAnnotation)
		}
		if _, ok := md.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
			t.Errorf("Secret %s keeps kubectl's last-applied configuration", ref)
		}
		if md.Annotations["hypershift.openshift.io/cluster"] == "" || len(s.Data) != 2 {
			t.Errorf("Secret %s lost its annotations or data: %+v", ref, s)
		}
	}
	if want.AddedNamespace != "" && !slices.Contains(r.namespaces, want.AddedNamespace) {
		t.Errorf("no Namespace %s in the output", want.AddedNamespace)
	}
}

// testKeyPrintable is a key that stringData can hold as it is.
var testKeyPrintable = []byte("0123456789abcdef0123456789abcdef")

func printableKeyBundle() []corev1.Secret {
	b := testBundle()
	b[0].Data = map[string][]byte{"key": testKeyPrintable}
	return b
}

func TestPatchRefusals(t *testing.T) {
	hc := docHostedCluster
	tests := []struct {
		name   string
		render string
		opts   func(*Options)
		want   []string // substrings of the error
	}{{
		name:   "not YAML",
		render: stream(docNamespace, docPullSecret, "apiVersion: v1\nkind: Secret\nmetadata: [name: x\n", hc),
		want:   []string{"render document 3 (from line 23) is not YAML: near line 25: did not find expected ',' or ']'", "fix it or render it again"},
	}, {
		name:   "no HostedCluster",
		render: stream(docNamespace, docPullSecret, docNodePool),
		want:   []string{"holds no HostedCluster (hypershift.openshift.io/v1beta1)", "hypershift create cluster <platform> ... --render"},
	}, {
		name:   "empty input",
		render: "",
		want:   []string{"holds no HostedCluster"},
	}, {
		name:   "several HostedClusters",
		render: stream(hc, replace(hc, "name: example\n", "name: other\n")),
		want:   []string{`holds 2 HostedClusters ("clusters/example", "clusters/other"): name the one to restore into`},
	}, {
		name:   "unknown HostedCluster",
		render: stream(hc, replace(hc, "name: example\n", "name: other\n")),
		opts:   func(o *Options) { o.HostedCluster = "nope" },
		want:   []string{`holds no HostedCluster "nope", only "clusters/example", "clusters/other": name one of them`},
	}, {
		name:   "etcd not Managed",
		render: stream(replace(hc, "managementType: Managed", "managementType: Unmanaged")),
		want:   []string{`spec.etcd.managementType is "Unmanaged", not Managed`, "render the cluster with managed etcd"},
	}, {
		name: "URL already set",
		render: stream(replace(hc, "        type: PersistentVolume\n",
			"        type: PersistentVolume\n        restoreSnapshotURL: [\""+testURL+"\"]\n")),
		want: []string{`HostedCluster "clusters/example" (render document 1) already has a spec.etcd.managed.storage.restoreSnapshotURL`, "--force"},
	}, {
		name:   "no aescbc active key",
		render: stream(replace(hc, "  secretEncryption:\n    aescbc:\n      activeKey:\n        name: example-etcd-encryption-key\n    type: aescbc\n", "")),
		want:   []string{"has no spec.secretEncryption.aescbc.activeKey", "cannot be read without it"},
	}, {
		name:   "kms encryption",
		render: stream(replace(hc, "    type: aescbc\n", "    type: kms\n")),
		want:   []string{`spec.secretEncryption.type is "kms"`, "render the cluster with aescbc encryption"},
	}, {
		name:   "bundle without active key",
		render: stream(hc),
		opts:   func(o *Options) { o.Secrets = bundleWithout(manifest.RoleActiveKey) },
		want:   []string{"the key bundle holds no Secret with hcpsnap.io/role=aescbc-active-key", "use the key bundle written by the same backup"},
	}, {
		name:   "bundle active key without data",
		render: stream(hc),
		opts: func(o *Options) {
			o.Secrets = testBundle()
			o.Secrets[0].Data = map[string][]byte{"other": testKey}
		},
		want: []string{`Secret "prod/old-etcd-encryption-key" has no data key "key"`},
	}, {
		name:   "no URL",
		render: stream(hc),
		opts:   func(o *Options) { o.SnapshotURL = "" },
		want:   []string{"no snapshot URL"},
	}, {
		name:   "URL too long for the CRD",
		render: stream(hc),
		opts:   func(o *Options) { o.SnapshotURL = testURL + "&X-Amz-Security-Token=" + strings.Repeat("A", 1000) },
		want:   []string{"characters, the HostedCluster CRD allows 1024"},
	}, {
		name:   "URL with a line break",
		render: stream(hc),
		opts:   func(o *Options) { o.SnapshotURL = testURL + "\nx" },
		want:   []string{"blanks or control characters"},
	}, {
		name:   "no namespace",
		render: stream(replace(hc, "  namespace: clusters\n", "")),
		want:   []string{"has no metadata.name or metadata.namespace"},
	}, {
		name:   "name holding the URL is redacted",
		render: stream(hc, replace(hc, "name: example\n", "name: \""+testURL+"\"\n")),
		want:   []string{`"clusters/[redacted]"`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts()
			if tt.opts != nil {
				tt.opts(&o)
			}
			out, rep, err := Patch([]byte(tt.render), o)
			if err == nil {
				t.Fatalf("Patch succeeded, want an error")
			}
			if out != nil || !equalReports(rep, Report{}) {
				t.Errorf("Patch returned output or a report with its error")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not contain %q", msg, w)
				}
			}
			assertClean(t, msg, o)
		})
	}
}

// assertClean checks that a message is one line and holds no secret.
func assertClean(t testing.TB, msg string, o Options) {
	t.Helper()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("message is not one line: %q", msg)
	}
	vals := secretValues()
	if len(o.SnapshotURL) >= minRedact {
		vals = append(vals, o.SnapshotURL)
	}
	for _, v := range vals {
		if strings.Contains(msg, v) {
			t.Errorf("message holds a secret value or the URL: %q", msg)
		}
	}
}

// TestPatchReportHoldsNoSecret checks the report of a full patch, warnings
// included, for the URL and every secret value.
func TestPatchReportHoldsNoSecret(t *testing.T) {
	_, rep, err := Patch([]byte(stream(renderDocs()...)), opts())
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(rep)
	assertClean(t, string(j), opts())
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "backup key") {
		t.Errorf("warnings = %q, want one about the unnamed backup key", rep.Warnings)
	}
}

// TestPatchIsIdempotent patches a patched render again, with Force: nothing
// more is added and the key stays.
func TestPatchIsIdempotent(t *testing.T) {
	for _, in := range []string{stream(renderDocs()...), listOf(renderDocs()...)} {
		out, _, err := Patch([]byte(in), opts())
		if err != nil {
			t.Fatal(err)
		}
		o := opts()
		o.Force = true
		again, rep, err := Patch(out, o)
		if err != nil {
			t.Fatal(err)
		}
		if rep.EncryptionKeyAction != KeyUnchanged || len(rep.AddedSecrets) > 0 || rep.AddedNamespace != "" || !rep.ReplacedURL {
			t.Errorf("second patch report = %+v, want nothing added", rep)
		}
		if len(readRender(t, again).kinds) != len(readRender(t, out).kinds) {
			t.Errorf("second patch changed the number of objects")
		}
	}
}

func TestSplitStreamKeepsEveryByte(t *testing.T) {
	for _, in := range []string{
		"", "a: 1", "---\na: 1\n", "# c\n---\na: 1\n---\nb: 2", "%YAML 1.2\n---\na: 1\n...\n---\nb: 2\n",
		"a: |\n  ---\n  x\n---\nb: 1\n", "----\na: 1\n", "--- # c\na: 1\n", "---\r\na: 1\r\n---\r\nb: 2\r\n",
	} {
		var b strings.Builder
		for _, s := range splitStream([]byte(in)) {
			b.Write(s.raw)
		}
		if b.String() != in {
			t.Errorf("split(%q) joined = %q", in, b.String())
		}
	}
}
