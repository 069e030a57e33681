package restore

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// FuzzPatch feeds Patch arbitrary renders: it must never panic, its errors
// must be one line without the URL or a secret, and what it writes must be
// YAML that kubectl reads when it read the input, and that a second Patch
// (with Force) finds already restored. testdata/fuzz/FuzzPatch holds more
// renders as users hand them over: commented, a List, JSON, CRLF, anchors,
// two HostedClusters, invalid YAML.
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
		if kubectlReads(render) == nil {
			if err := kubectlReads(out); err != nil {
				t.Fatalf("kubectl reads the input but not the output: %v", err)
			}
		}
		o.Force = true
		_, rep2, err := Patch(out, o)
		if err != nil {
			t.Fatalf("patching the output again: %v", err)
		}
		if rep2.EncryptionKeyAction != KeyUnchanged || len(rep2.AddedSecrets) > 0 || rep2.AddedNamespace != "" ||
			rep2.HostedCluster != rep.HostedCluster {
			t.Fatalf("patching the output again changed more than the URL: %+v", rep2)
		}
		if strings.Count(string(out), testURL) == 0 {
			t.Fatalf("the output lacks the URL")
		}
	})
}

// kubectlReads reads a render the way `kubectl apply -f` does: documents
// cut by its YAML reader, each converted to JSON by sigs.k8s.io/yaml.
func kubectlReads(render []byte) error {
	rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(render)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := sigsyaml.YAMLToJSON(doc); err != nil {
			return err
		}
	}
}
