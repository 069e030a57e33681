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

// TestPatchWarnsUnrestoredShards proves that a backup with shard snapshots
// restores the default member as any other backup and says plainly that
// the shards cannot be restored through HyperShift's API, naming each
// shard and where its snapshot is.
func TestPatchWarnsUnrestoredShards(t *testing.T) {
	plain, plainRep, err := Patch([]byte(stream(renderDocs()...)), opts())
	if err != nil {
		t.Fatal(err)
	}
	o := opts()
	o.Shards = []manifest.ShardSnapshot{{
		Shard:    manifest.Shard{Name: "events", Resources: []manifest.ShardResource{{Resource: "events"}}},
		Snapshot: manifest.Object{Key: "backups/example/20260101T000000Z/snapshot-events.db"},
	}}
	out, rep, err := Patch([]byte(stream(renderDocs()...)), o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, plain) {
		t.Error("shard snapshots changed the patched render")
	}
	if got := strings.Join(rep.UnrestoredShards, "; "); got != "events (events)" || len(rep.MissingShards) != 0 {
		t.Errorf("report unrestored shards %q, missing %q", got, rep.MissingShards)
	}
	if len(rep.Warnings) != len(plainRep.Warnings)+1 {
		t.Fatalf("warnings %q, want one more than %q", rep.Warnings, plainRep.Warnings)
	}
	w := rep.Warnings[len(rep.Warnings)-1]
	for _, want := range []string{"snapshots of the etcd shards events (events)", "no restoreSnapshotURL for a shard", "starts those shards empty",
		"backups/example/20260101T000000Z/snapshot-events.db"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning %q lacks %q", w, want)
		}
	}
}
