package prune

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/retention"
)

var now = time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)

// addBackup writes a complete backup as the backup workflow leaves it.
func addBackup(m *memStore, cluster, ts string) {
	folder := "backups/" + cluster + "/" + ts
	run := "run-" + ts
	snap := []byte("snapshot of " + ts)
	bundle := "hcpsnap-keys/" + cluster + "/" + ts + "/" + manifest.KeyBundleObject
	man := manifest.Manifest{SchemaVersion: 1, RunID: run, Cluster: cluster, Namespace: "clusters",
		Snapshot:  manifest.Object{Bucket: "bkt", Key: folder + "/" + manifest.SnapshotObject, Size: int64(len(snap))},
		KeyBundle: manifest.KeyBundle{Bucket: "bkt", Key: bundle}}
	data, _ := json.Marshal(man)
	m.put(folder+"/"+manifest.SnapshotObject, snap, map[string]string{manifest.MetaRunID: run})
	m.put(bundle, []byte(`{"kind":"List","items":[]}`), map[string]string{manifest.MetaRunID: run})
	m.put(folder+"/"+manifest.ManifestObject, data, nil)
}

// objectsOf are the keys a backup owns.
func objectsOf(cluster, ts string) []string {
	return []string{
		"backups/" + cluster + "/" + ts + "/" + manifest.ManifestObject,
		"backups/" + cluster + "/" + ts + "/" + manifest.SnapshotObject,
		"hcpsnap-keys/" + cluster + "/" + ts + "/" + manifest.KeyBundleObject,
	}
}

// history: two clusters, a's backups on five days, b's on two.
var (
	historyA = []string{"20260310T120000Z", "20260309T120000Z", "20260308T120000Z", "20260301T120000Z", "20260201T120000Z"}
	historyB = []string{"20260310T010000Z", "20260220T010000Z"}
)

func seeded() *memStore {
	m := newMemStore()
	for _, ts := range historyA {
		addBackup(m, "a", ts)
	}
	for _, ts := range historyB {
		addBackup(m, "b", ts)
	}
	return m
}

// expect returns the keys left when only the named backups stay.
func expect(extra []string, keep map[string][]string) []string {
	var ks []string
	for c, tss := range keep {
		for _, ts := range tss {
			ks = append(ks, objectsOf(c, ts)...)
		}
	}
	ks = append(ks, extra...)
	slices.Sort(ks)
	return ks
}

func opts(p retention.Policy) Options {
	return Options{Bucket: "bkt", Prefix: "backups", KeyPrefix: "hcpsnap-keys", Retention: retention.Options{Policy: p, Now: now}}
}

// prune runs a whole prune and returns its outcomes.
func prune(t *testing.T, store Store, o Options, dryRun bool) ([]Outcome, error) {
	t.Helper()
	items, _, err := Plan(context.Background(), store, o)
	if err != nil {
		return nil, err
	}
	var out []Outcome
	err = Execute(context.Background(), store, items, now, dryRun, func(oc Outcome) { out = append(out, oc) })
	return out, err
}

func TestPruneEveryCluster(t *testing.T) {
	m := seeded()
	out, err := prune(t, m, opts(retention.Policy{Daily: 2}), false)
	if err != nil {
		t.Fatal(err)
	}
	want := expect(nil, map[string][]string{"a": historyA[:2], "b": historyB})
	if got := m.keys(); !slices.Equal(got, want) {
		t.Errorf("left %q\nwant %q", got, want)
	}
	var results []string
	for _, o := range out {
		results = append(results, o.Folder.Cluster+" "+o.Folder.Timestamp+" "+o.Result)
	}
	wantResults := []string{
		"a 20260310T120000Z kept", "a 20260309T120000Z kept", "a 20260308T120000Z removed", "a 20260301T120000Z removed", "a 20260201T120000Z removed",
		"b 20260310T010000Z kept", "b 20260220T010000Z kept",
	}
	if !slices.Equal(results, wantResults) {
		t.Errorf("outcomes %q\nwant %q", results, wantResults)
	}
	// The order of one removal: tombstone, key bundle, snapshot, manifest, tombstone.
	f := "backups/a/20260308T120000Z/"
	wantLog := []string{"put " + f + TombstoneObject, "delete hcpsnap-keys/a/20260308T120000Z/key-bundle.json",
		"delete " + f + "snapshot.db", "delete " + f + "manifest.json", "delete " + f + TombstoneObject}
	if !slices.Equal(m.log[:5], wantLog) {
		t.Errorf("first removal %q\nwant %q", m.log[:5], wantLog)
	}
}

func TestPruneOneCluster(t *testing.T) {
	m := seeded()
	o := opts(retention.Policy{Last: 1})
	o.Cluster = "b"
	if _, err := prune(t, m, o, false); err != nil {
		t.Fatal(err)
	}
	want := expect(nil, map[string][]string{"a": historyA, "b": historyB[:1]})
	if got := m.keys(); !slices.Equal(got, want) {
		t.Errorf("left %q\nwant %q", got, want)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	m := seeded()
	before := m.keys()
	out, err := prune(t, m, opts(retention.Policy{Last: 1}), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.keys(); !slices.Equal(got, before) || m.writes != 0 {
		t.Errorf("a dry run changed the bucket (%d writes)", m.writes)
	}
	n := 0
	for _, o := range out {
		if o.Result == ResultWouldRemove {
			n++
		}
	}
	if n != 5 {
		t.Errorf("%d would-remove outcomes, want 5", n)
	}
}

// TestCrashAtEveryPoint kills the prune at every write it makes, then runs
// it again: the bucket ends as an uninterrupted prune leaves it, and between
// the runs no backup has lost an object without a tombstone.
func TestCrashAtEveryPoint(t *testing.T) {
	policy := retention.Policy{Last: 2}
	want := expect(nil, map[string][]string{"a": historyA[:2], "b": historyB})
	for n := 1; ; n++ {
		m := seeded()
		m.crashAt = n
		_, _ = prune(t, m, opts(policy), false)
		crashed := m.writes >= n
		// Between the runs: a folder that lost an object has its tombstone.
		for _, c := range []struct {
			cluster string
			tss     []string
		}{{"a", historyA}, {"b", historyB}} {
			for _, ts := range c.tss {
				have := 0
				for _, k := range objectsOf(c.cluster, ts) {
					if slices.Contains(m.keys(), k) {
						have++
					}
				}
				tomb := slices.Contains(m.keys(), "backups/"+c.cluster+"/"+ts+"/"+TombstoneObject)
				if have > 0 && have < 3 && !tomb {
					t.Fatalf("crash at write %d: %s/%s is half deleted without a tombstone: %q", n, c.cluster, ts, m.keys())
				}
			}
		}
		m.crashAt = 0
		// The rerun finishes even with a policy that would keep everything.
		if _, err := prune(t, m, opts(retention.Policy{Last: 10}), false); err != nil {
			t.Fatalf("crash at write %d: rerun: %v", n, err)
		}
		if crashed {
			// Only the removals begun before the crash are finished;
			// the rerun's policy keeps the rest.
			for _, k := range m.keys() {
				if strings.HasSuffix(k, TombstoneObject) {
					t.Fatalf("crash at write %d: a tombstone is left: %q", n, m.keys())
				}
			}
			for _, c := range []string{"a/20260310T120000Z", "a/20260309T120000Z", "b/20260310T010000Z", "b/20260220T010000Z"} {
				cl, ts, _ := strings.Cut(c, "/")
				for _, k := range objectsOf(cl, ts) {
					if !slices.Contains(m.keys(), k) {
						t.Fatalf("crash at write %d: kept backup %s lost %s", n, c, k)
					}
				}
			}
			for _, ts := range historyA[2:] {
				have := 0
				for _, k := range objectsOf("a", ts) {
					if slices.Contains(m.keys(), k) {
						have++
					}
				}
				if have != 0 && have != 3 {
					t.Fatalf("crash at write %d: a/%s has %d of 3 objects after the rerun", n, ts, have)
				}
			}
			// A third run with the first policy reaches the same end.
			if _, err := prune(t, m, opts(policy), false); err != nil {
				t.Fatal(err)
			}
		}
		if got := m.keys(); crashed && !slices.Equal(got, want) {
			t.Fatalf("crash at write %d: left %q\nwant %q", n, got, want)
		}
		if !crashed {
			if n < 10 {
				t.Fatalf("the prune made only %d writes", n-1)
			}
			if got := m.keys(); !slices.Equal(got, want) {
				t.Fatalf("left %q\nwant %q", got, want)
			}
			return
		}
	}
}

// TestHalfDeleted finishes the state a crash leaves: a tombstone, the key
// bundle and snapshot gone, the manifest there.
func TestHalfDeleted(t *testing.T) {
	m := seeded()
	f := "backups/a/20260301T120000Z/"
	m.put(f+TombstoneObject, []byte(`{"schemaVersion":1,"keyBundle":"hcpsnap-keys/a/20260301T120000Z/key-bundle.json"}`), nil)
	delete(m.objects, "hcpsnap-keys/a/20260301T120000Z/key-bundle.json")
	delete(m.objects, f+"snapshot.db")
	out, err := prune(t, m, opts(retention.Policy{Last: 10}), false)
	if err != nil {
		t.Fatal(err)
	}
	want := expect(nil, map[string][]string{"a": {historyA[0], historyA[1], historyA[2], historyA[4]}, "b": historyB})
	if got := m.keys(); !slices.Equal(got, want) {
		t.Errorf("left %q\nwant %q", got, want)
	}
	for _, o := range out {
		if o.Folder.Timestamp == "20260301T120000Z" && (o.Result != ResultRemoved || o.Decision.Action != retention.Finish) {
			t.Errorf("the half-deleted backup: %s %s", o.Decision.Action, o.Result)
		}
	}
}

func TestCorruptManifest(t *testing.T) {
	m := seeded()
	f := "backups/a/20260201T120000Z/"
	m.put(f+manifest.ManifestObject, []byte("{not json"), nil)
	young := "20260310T180000Z" // 6h before now: may be a run in progress
	m.put("backups/a/"+young+"/snapshot.db", []byte("x"), map[string]string{manifest.MetaRunID: "r"})

	out, err := prune(t, m, opts(retention.Policy{Last: 1}), false)
	if err != nil {
		t.Fatal(err)
	}
	keys := m.keys()
	if !slices.Contains(keys, f+manifest.ManifestObject) || !slices.Contains(keys, f+"snapshot.db") {
		t.Errorf("the backup with a corrupt manifest was touched: %q", keys)
	}
	for _, o := range out {
		if o.Folder.Timestamp == "20260201T120000Z" && !strings.Contains(strings.Join(o.Decision.Rules, ";"), "manifest unreadable") {
			t.Errorf("rules %q do not report the unreadable manifest", o.Decision.Rules)
		}
	}
	// With --include-incomplete it goes, the young folder stays.
	o := opts(retention.Policy{Last: 1})
	o.Retention.IncludeIncomplete = true
	if _, err := prune(t, m, o, false); err != nil {
		t.Fatal(err)
	}
	want := expect([]string{"backups/a/" + young + "/snapshot.db"}, map[string][]string{"a": historyA[:1], "b": historyB[:1]})
	if got := m.keys(); !slices.Equal(got, want) {
		t.Errorf("left %q\nwant %q", got, want)
	}
}

// TestRunningFolderStays: a folder an unfinished run writes is kept even
// with --include-incomplete and past the guard; the others of its kind go.
func TestRunningFolderStays(t *testing.T) {
	m := seeded()
	for _, ts := range []string{"20260305T120000Z", "20260304T120000Z"} { // a stuck run and a dead one, both past the guard
		m.put("backups/a/"+ts+"/snapshot.db", []byte("x"), map[string]string{manifest.MetaRunID: "r-" + ts})
	}
	o := opts(retention.Policy{Last: 1})
	o.Retention.IncludeIncomplete = true
	o.Running = map[string]string{"backups/a/20260305T120000Z": "20260305T120000Z-0000abcd"}
	out, err := prune(t, m, o, false)
	if err != nil {
		t.Fatal(err)
	}
	want := expect([]string{"backups/a/20260305T120000Z/snapshot.db"}, map[string][]string{"a": historyA[:1], "b": historyB[:1]})
	if got := m.keys(); !slices.Equal(got, want) {
		t.Errorf("left %q\nwant %q", got, want)
	}
	for _, oc := range out {
		if oc.Folder.Timestamp == "20260305T120000Z" && !strings.Contains(strings.Join(oc.Decision.Rules, ";"), "20260305T120000Z-0000abcd in progress") {
			t.Errorf("rules %q do not name the run in progress", oc.Decision.Rules)
		}
	}
}

// TestNewestVerifiedStays: the newest backup has lost its snapshot, so the
// next one is the newest verified and stays even with keep-last 1.
func TestNewestVerifiedStays(t *testing.T) {
	m := seeded()
	delete(m.objects, "backups/a/20260310T120000Z/snapshot.db")
	if _, err := prune(t, m, opts(retention.Policy{Last: 1}), false); err != nil {
		t.Fatal(err)
	}
	keys := m.keys()
	for _, k := range append(objectsOf("a", historyA[1]), "backups/a/20260310T120000Z/manifest.json") {
		if !slices.Contains(keys, k) {
			t.Errorf("%s was removed", k)
		}
	}
}

// TestLockedAndRefused: a locked backup is reported and left whole, a
// refused delete fails that backup only; the rest goes on.
func TestLockedAndRefused(t *testing.T) {
	m := seeded()
	lockedKey := "backups/a/20260308T120000Z/snapshot.db"
	o := m.objects[lockedKey]
	o.info.RetainUntil = now.Add(time.Hour)
	m.objects[lockedKey] = o
	m.refuse["backups/a/20260301T120000Z/snapshot.db"] = true
	m.lockedDelete["backups/a/20260201T120000Z/manifest.json"] = true
	out, err := prune(t, m, opts(retention.Policy{Last: 2}), false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range out {
		got[o.Folder.Cluster+"/"+o.Folder.Timestamp] = o.Result
		if o.Result == ResultLocked && !errors.Is(o.Err, ErrLocked) {
			t.Errorf("locked without ErrLocked: %v", o.Err)
		}
	}
	if got["a/20260308T120000Z"] != ResultLocked || got["a/20260301T120000Z"] != ResultFailed || got["a/20260201T120000Z"] != ResultLocked || got["b/20260220T010000Z"] != ResultKept {
		t.Errorf("results %v", got)
	}
	keys := m.keys()
	for _, k := range objectsOf("a", "20260308T120000Z") {
		if !slices.Contains(keys, k) {
			t.Errorf("locked backup lost %s", k)
		}
	}
	if slices.Contains(keys, "backups/a/20260308T120000Z/"+TombstoneObject) {
		t.Error("a locked backup got a tombstone")
	}
	if !slices.Contains(keys, "backups/a/20260301T120000Z/"+TombstoneObject) {
		t.Error("the backup whose delete was refused lost its tombstone")
	}
}

// TestReadFailureStopsThePlan: a manifest that was listed but cannot be
// read for a moment is an error, not an incomplete backup to remove.
func TestReadFailureStopsThePlan(t *testing.T) {
	m := seeded()
	m.failGet["backups/a/20260201T120000Z/manifest.json"] = true
	o := opts(retention.Policy{Last: 1})
	o.Retention.IncludeIncomplete = true
	if _, err := prune(t, m, o, false); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v, want the read failure", err)
	}
	if m.writes != 0 {
		t.Errorf("%d writes after a failed read", m.writes)
	}
}

// TestForeignKeyBundle: a manifest that names another backup's key bundle
// is not trusted, and that key bundle survives.
func TestForeignKeyBundle(t *testing.T) {
	m := seeded()
	f := "backups/a/20260201T120000Z/"
	var man manifest.Manifest
	_ = json.Unmarshal(m.objects[f+"manifest.json"].data, &man)
	man.KeyBundle.Key = "hcpsnap-keys/a/20260310T120000Z/key-bundle.json"
	data, _ := json.Marshal(man)
	m.put(f+"manifest.json", data, nil)
	o := opts(retention.Policy{Last: 1})
	o.Retention.IncludeIncomplete = true
	if _, err := prune(t, m, o, false); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(m.keys(), "hcpsnap-keys/a/20260310T120000Z/key-bundle.json") {
		t.Error("the newest backup's key bundle was deleted through another manifest")
	}
}

func TestIgnoredAndEmpty(t *testing.T) {
	m := seeded()
	m.put("backups/a/not-a-time/snapshot.db", []byte("x"), nil)
	m.put("backups/stray", []byte("x"), nil)
	items, ignored, err := Plan(context.Background(), m, opts(retention.Policy{Last: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 7 || len(ignored) != 2 {
		t.Errorf("%d items, ignored %v", len(items), ignored)
	}
	if _, _, err := Plan(context.Background(), m, opts(retention.Policy{})); !errors.Is(err, retention.ErrEmpty) {
		t.Errorf("empty policy: %v", err)
	}
	if m.writes != 0 {
		t.Error("planning wrote")
	}
}

// TestEmptyPrefix: backups at the top of the bucket; the key bundles' own
// prefix is not a cluster, and is left alone.
func TestEmptyPrefix(t *testing.T) {
	m := newMemStore()
	for _, ts := range historyA[:3] {
		addBackup(m, "a", ts)
	}
	for k, v := range m.objects {
		if strings.HasPrefix(k, "backups/") {
			delete(m.objects, k)
			m.objects[strings.TrimPrefix(k, "backups/")] = v
		}
	}
	// The manifests still name backups/...: rewrite them as a backup with
	// an empty prefix writes them.
	for _, ts := range historyA[:3] {
		key := "a/" + ts + "/" + manifest.ManifestObject
		o := m.objects[key]
		o.data = []byte(strings.ReplaceAll(string(o.data), `"backups/a/`, `"a/`))
		m.objects[key] = o
	}
	o := opts(retention.Policy{Last: 1})
	o.Prefix = ""
	out, err := prune(t, m, o, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || out[0].Result != ResultKept || out[1].Result != ResultRemoved || out[2].Result != ResultRemoved {
		t.Fatalf("outcomes %+v", out)
	}
	want := []string{"a/20260310T120000Z/manifest.json", "a/20260310T120000Z/snapshot.db", "hcpsnap-keys/a/20260310T120000Z/key-bundle.json"}
	if got := m.keys(); !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
}

// TestShardedBackup: a backup with etcd shard snapshots is verified only
// with every shard's snapshot as the manifest records it, and prune removes
// the shard objects with the rest of the folder.
func TestShardedBackup(t *testing.T) {
	m := newMemStore()
	addSharded := func(ts string, withShard bool) string {
		folder := "backups/a/" + ts
		run := "run-" + ts
		snap, shard := []byte("snapshot of "+ts), []byte("events of "+ts)
		man := manifest.Manifest{SchemaVersion: manifest.SchemaVersionShards, RunID: run, Cluster: "a", Namespace: "clusters",
			Snapshot: manifest.Object{Bucket: "bkt", Key: folder + "/" + manifest.SnapshotObject, Size: int64(len(snap))},
			Shards: []manifest.ShardSnapshot{{Shard: manifest.Shard{Name: "events"},
				Snapshot: manifest.Object{Bucket: "bkt", Key: folder + "/" + manifest.ShardSnapshotObject("events"), Size: int64(len(shard))}}}}
		data, _ := json.Marshal(man)
		m.put(folder+"/"+manifest.SnapshotObject, snap, map[string]string{manifest.MetaRunID: run})
		if withShard {
			m.put(folder+"/"+manifest.ShardSnapshotObject("events"), shard, map[string]string{manifest.MetaRunID: run})
		}
		m.put(folder+"/"+manifest.ManifestObject, data, nil)
		return folder
	}
	whole := addSharded("20260301T000000Z", true)
	partial := addSharded("20260302T000000Z", false)
	items, _, err := Plan(context.Background(), m, opts(retention.Policy{Last: 5}))
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]retention.State{}
	reasons := map[string]string{}
	for _, it := range items {
		states[it.Folder.Key], reasons[it.Folder.Key] = it.Folder.State, it.Folder.Reason
	}
	if states[whole] != retention.Verified {
		t.Errorf("whole sharded backup: %v %q", states[whole], reasons[whole])
	}
	if got := reasons[partial]; states[partial] != retention.Incomplete || got != "snapshot of etcd shard events missing" {
		t.Errorf("sharded backup without its shard object: %q", got)
	}
	o := opts(retention.Policy{Last: 1})
	o.Retention.IncludeIncomplete = true
	if _, err := prune(t, m, o, false); err != nil {
		t.Fatal(err)
	}
	for _, k := range m.keys() {
		if strings.HasPrefix(k, partial) {
			t.Errorf("object %s of the pruned backup is left", k)
		}
	}
	if !slices.Contains(m.keys(), whole+"/"+manifest.ShardSnapshotObject("events")) {
		t.Errorf("the kept backup lost its shard snapshot: %q", m.keys())
	}
}
