package prune

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/retention"
)

// addManagementBackup writes a management backup as pull-node leaves it:
// snapshot, static resources archive and manifest, and no key bundle.
func addManagementBackup(m *memStore, ts string) {
	folder := "backups/" + manifest.ManagementSeries + "/" + ts
	run := "run-" + ts
	snap := []byte("snapshot of " + ts)
	man := manifest.Manifest{SchemaVersion: 1, RunID: run, Cluster: manifest.ManagementSeries, Source: manifest.SourceManagement, Node: "master-0",
		Snapshot:        manifest.Object{Bucket: "bkt", Key: folder + "/" + manifest.SnapshotObject, Size: int64(len(snap))},
		StaticResources: &manifest.Object{Bucket: "bkt", Key: folder + "/" + manifest.StaticResourcesObject, Size: 3},
		KeyBundle:       manifest.KeyBundle{Secrets: []string{}}}
	data, _ := json.Marshal(man)
	m.put(folder+"/"+manifest.SnapshotObject, snap, map[string]string{manifest.MetaRunID: run})
	m.put(folder+"/"+manifest.StaticResourcesObject, []byte("tgz"), map[string]string{manifest.MetaRunID: run})
	m.put(folder+"/"+manifest.ManifestObject, data, nil)
}

var historyManagement = []string{"20260310T020000Z", "20260309T020000Z", "20260308T020000Z"}

func managementObjects(ts string) []string {
	folder := "backups/" + manifest.ManagementSeries + "/" + ts + "/"
	return []string{folder + manifest.ManifestObject, folder + manifest.SnapshotObject, folder + manifest.StaticResourcesObject}
}

// A management backup without a key bundle is verified, and goes whole:
// its static resources archive with it, and no key bundle is looked for.
func TestPruneManagement(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster string
	}{
		{name: "the management series alone", cluster: manifest.ManagementSeries},
		{name: "every series", cluster: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := seeded()
			for _, ts := range historyManagement {
				addManagementBackup(m, ts)
			}
			o := opts(retention.Policy{Last: 1})
			o.Cluster = tc.cluster
			out, err := prune(t, m, o, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, oc := range out {
				if oc.Folder.Cluster == manifest.ManagementSeries && oc.Folder.State != retention.Verified {
					t.Errorf("%s: state %v (%s), want verified", oc.Folder.Key, oc.Folder.State, oc.Folder.Reason)
				}
			}
			left := m.keys()
			for _, ts := range historyManagement[1:] {
				for _, k := range managementObjects(ts) {
					if slices.Contains(left, k) {
						t.Errorf("%s left after its backup was pruned", k)
					}
				}
			}
			for _, k := range managementObjects(historyManagement[0]) {
				if !slices.Contains(left, k) {
					t.Errorf("%s of the newest management backup was removed", k)
				}
			}
			for _, l := range m.log {
				if strings.Contains(l, manifest.KeyBundleObject) && strings.Contains(l, manifest.ManagementSeries) {
					t.Errorf("a management backup's removal touched a key bundle: %s", l)
				}
			}
			// The hosted clusters' backups are pruned only without a series.
			hosted := slices.Contains(left, objectsOf("a", historyA[1])[0])
			if hosted != (tc.cluster != "") {
				t.Errorf("backup a/%s still there: %v, want %v", historyA[1], hosted, tc.cluster != "")
			}
		})
	}
}
