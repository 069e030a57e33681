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
