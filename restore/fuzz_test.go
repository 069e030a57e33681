package restore

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzPatch feeds Patch arbitrary renders: it must never panic, its errors
// must be one line without the URL or a secret, and what it writes must be
// YAML that a second Patch (with Force) finds already restored.
func FuzzPatch(f *testing.F) {
	docs := renderDocs()
	for _, seed := range []string{
		stream(docs...),
		listOf(docs...),
		stream(docNamespace, docPullSecret, docSSHKey, docHostedCluster, docNodePool),
		stream(docHostedCluster, replace(docHostedCluster, "name: example\n", "name: other\n")),
		stream(replace(docHostedCluster, "managementType: Managed", "managementType: Unmanaged")),
		stream(replace(docHostedCluster, "    type: aescbc\n", "    type: kms\n")),
		stream(replace(docEncryptionKey, "data:\n  key: "+b64(renderKey)+"\n", "stringData:\n  key: x\n"), docHostedCluster),
		"%YAML 1.2\n---\na: &a {b: 1}\nc: *a\n...\n--- [1, 2]\n",
		"apiVersion: v1\nkind: List\nitems:\n",
	} {
		f.Add([]byte(seed), "", false)
	}
	f.Add([]byte(stream(docHostedCluster, replace(docHostedCluster, "name: example\n", "name: other\n"))), "clusters/other", true)
	f.Fuzz(func(t *testing.T, render []byte, hostedCluster string, force bool) {
		o := opts()
		o.HostedCluster, o.Force = hostedCluster, force
		out, rep, err := Patch(render, o)
		if err != nil {
			assertClean(t, err.Error(), o)
			if out != nil {
				t.Fatalf("output with an error")
			}
			return
		}
		j, _ := json.Marshal(rep)
		assertClean(t, string(j), o)
		if _, err := parseStream(out); err != nil {
			t.Fatalf("the output is not YAML: %v", err)
		}
		o.Force = true
		_, rep2, err := Patch(out, o)
		if err != nil {
			t.Fatalf("patching the output again: %v", err)
		}
		if rep2.EncryptionKeyAction != KeyUnchanged || len(rep2.AddedSecrets) > 0 || rep2.HostedCluster != rep.HostedCluster {
			t.Fatalf("patching the output again changed more than the URL: %+v", rep2)
		}
		if strings.Count(string(out), testURL) == 0 {
			t.Fatalf("the output lacks the URL")
		}
	})
}
