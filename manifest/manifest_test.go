package manifest

import (
	"strings"
	"testing"
)

// A manifest written before the management fields existed still decodes as
// a HostedCluster's; a management one keeps its fields; an unknown source
// is refused rather than taken for a HostedCluster's backup.
func TestDecodeSource(t *testing.T) {
	old := `{"schemaVersion":1,"runID":"r","cluster":"c","namespace":"clusters","snapshot":{"key":"backups/c/20260101T000000Z/snapshot.db","size":4}}`
	m, err := Decode([]byte(old))
	if err != nil || m.IsManagement() || m.Source != "" || m.StaticResources != nil {
		t.Fatalf("old manifest: %+v, %v", m, err)
	}
	mgmt := `{"schemaVersion":1,"runID":"r","cluster":"_management","source":"management","node":"master-0",
		"originalFiles":{"folder":"20260101T000000Z","snapshot":"snapshot_x.db","staticResources":"static_kuberesources_x.tar.gz"},
		"staticResources":{"key":"backups/_management/20260101T000000Z/static_kuberesources.tar.gz","size":3},
		"snapshot":{"key":"backups/_management/20260101T000000Z/snapshot.db","size":4}}`
	m, err = Decode([]byte(mgmt))
	if err != nil || !m.IsManagement() || m.Node != "master-0" || m.Original.Snapshot != "snapshot_x.db" || m.StaticResources.Size != 3 {
		t.Fatalf("management manifest: %+v, %v", m, err)
	}
	_, err = Decode([]byte(strings.Replace(mgmt, `"source":"management"`, `"source":"elsewhere"`, 1)))
	if err == nil || !strings.Contains(err.Error(), "newer hcpsnap") {
		t.Fatalf("unknown source: %v", err)
	}
}
