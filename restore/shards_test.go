package restore

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// TestPatchWarnsMissingShards proves that a backup taken without the
// cluster's etcd shards is restored with a plain warning that names the
// shards and their resources, and that the render is patched exactly as
// for any other backup; a backup with none warns of nothing.
func TestPatchWarnsMissingShards(t *testing.T) {
	plain, plainRep, err := Patch([]byte(stream(renderDocs()...)), opts())
	if err != nil {
		t.Fatal(err)
	}
	if len(plainRep.MissingShards) != 0 {
		t.Errorf("backup without shards reports missing shards %q", plainRep.MissingShards)
	}
	o := opts()
	o.MissingShards = []manifest.Shard{
		{Name: "events", Resources: []manifest.ShardResource{{Resource: "events"}}},
		{Name: "leases", Resources: []manifest.ShardResource{{APIGroup: "coordination.k8s.io", Resource: "leases"}}},
	}
	out, rep, err := Patch([]byte(stream(renderDocs()...)), o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, plain) {
		t.Error("missing shards changed the patched render")
	}
	if got := strings.Join(rep.MissingShards, "; "); got != "events (events); leases (leases.coordination.k8s.io)" {
		t.Errorf("report missing shards %q", got)
	}
	if len(rep.Warnings) != len(plainRep.Warnings)+1 {
		t.Fatalf("warnings %q, want one more than %q", rep.Warnings, plainRep.Warnings)
	}
	w := rep.Warnings[len(rep.Warnings)-1]
	for _, want := range []string{"without the cluster's etcd shards events (events), leases (leases.coordination.k8s.io)", "will lack every object of those resources"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q lacks %q", w, want)
		}
	}
}
