package manifest

import (
	"encoding/json"
	"strings"
	"testing"
)

// A manifest without missingShards (every one written before hcpsnap read
// shards) decodes with none; one with them keeps them; an entry without a
// name is refused rather than reported as a shard nobody can identify.
func TestDecodeMissingShards(t *testing.T) {
	old := `{"schemaVersion":1,"runID":"r","cluster":"c","namespace":"clusters","snapshot":{"key":"backups/c/20260101T000000Z/snapshot.db","size":4}}`
	m, err := Decode([]byte(old))
	if err != nil || m.MissingShards != nil {
		t.Fatalf("old manifest: %+v, %v", m.MissingShards, err)
	}
	withShards := strings.Replace(old, `"snapshot"`, `"missingShards":[{"name":"events","resources":[{"apiGroup":"","resource":"events"}],"replicas":1,"storageType":"EmptyDir"},`+
		`{"name":"leases","resources":[{"apiGroup":"coordination.k8s.io","resource":"leases"}],"replicas":3}],"snapshot"`, 1)
	m, err = Decode([]byte(withShards))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := DescribeShards(m.MissingShards), "events (events), leases (leases.coordination.k8s.io)"; got != want {
		t.Fatalf("DescribeShards = %q, want %q", got, want)
	}
	if m.MissingShards[0].StorageType != "EmptyDir" || m.MissingShards[1].Replicas != 3 {
		t.Fatalf("shards decoded as %+v", m.MissingShards)
	}
	_, err = Decode([]byte(strings.Replace(withShards, `"name":"events",`, ``, 1)))
	if err == nil || !strings.Contains(err.Error(), "missingShards[0] has no name") {
		t.Fatalf("shard without name: %v", err)
	}
}

// An unsharded backup's manifest has no missingShards key at all, so it is
// byte for byte what hcpsnap wrote before.
func TestNoMissingShardsKeyWhenNone(t *testing.T) {
	data, err := json.Marshal(Manifest{SchemaVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "missingShards") {
		t.Fatalf("manifest without shards names them: %s", data)
	}
}

// A backup with shard snapshots is schema version 2, and only such a
// backup is: a version 1 manifest with shards (which an older hcpsnap would
// restore without them) or a version 2 one without are refused, as are
// shards without a name or an object of their own. ForShard describes one
// shard's snapshot as the backup's only one.
func TestDecodeShardSnapshots(t *testing.T) {
	base := `{"schemaVersion":2,"runID":"r","cluster":"c","namespace":"clusters","snapshot":{"key":"b/c/t/snapshot.db","size":4},"etcd":{"member":"etcd-0","revision":9},` +
		`"shards":[{"name":"events","resources":[{"apiGroup":"","resource":"events"}],"etcd":{"member":"etcd-events-0","revision":7},"snapshot":{"key":"b/c/t/snapshot-events.db","size":3}}]}`
	m, err := Decode([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	s := m.ForShard(0)
	if s.Snapshot.Key != "b/c/t/snapshot-events.db" || s.Etcd.Revision != 7 || s.Shards != nil || s.Cluster != "c" || m.Snapshot.Key != "b/c/t/snapshot.db" {
		t.Fatalf("ForShard(0) = %+v (manifest %+v)", s, m)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"version 1 with shards", `"schemaVersion":2`, `"schemaVersion":1`, "version 2 is the one of a backup with shards"},
		{"version 2 without shards", `"shards":[`, `"other":[`, "version 2 is the one of a backup with shards"},
		{"version 3", `"schemaVersion":2`, `"schemaVersion":3`, "use a newer hcpsnap"},
		{"no name", `"name":"events",`, ``, "shards[0] has no name"},
		{"the default member's object", `snapshot-events.db`, `snapshot.db`, "names no snapshot of its own"},
	} {
		_, err := Decode([]byte(strings.Replace(base, tc.from, tc.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
