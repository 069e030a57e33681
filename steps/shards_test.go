package steps

import (
	"bytes"
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/manifest"
)

var testShards = []kube.EtcdShard{
	{Name: "events", Replicas: 1, StorageType: "EmptyDir", Resources: []kube.EtcdShardResource{{Resource: "events"}}},
	{Name: "leases", Replicas: 3, Resources: []kube.EtcdShardResource{{APIGroup: "coordination.k8s.io", Resource: "leases"}}},
}

// shardFixture is a fixture whose HostedCluster has the etcd shards
// testShards, each with its first member's pod and files of its own.
func shardFixture(t *testing.T) *fixture {
	fx := newFixture(t, nil)
	fx.hs.shards = testShards
	fx.exec.apart = map[string]bool{}
	for _, sh := range testShards {
		if _, err := fx.kube.CoreV1().Pods(testHCPNS).Create(context.Background(), shardPod(sh.Name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		fx.exec.apart[ShardPod(sh.Name)] = true
	}
	return fx
}

// TestBackupShards proves that a sharded cluster's backup takes a snapshot
// of the default member and of each shard's first member while the API is
// down, uploads each to its own object, cleans every pod, and writes one
// manifest (schema version 2) that lists them all.
func TestBackupShards(t *testing.T) {
	fx := shardFixture(t)
	s := fx.state(defaultOptions())
	if err := fx.execute(s); err != nil {
		t.Fatalf("backup failed: %v", err)
	}
	m := storedManifest(t, fx, s)
	if m.SchemaVersion != manifest.SchemaVersionShards || len(m.Shards) != 2 || m.MissingShards != nil {
		t.Fatalf("manifest schema %d, shards %+v, missing %+v", m.SchemaVersion, m.Shards, m.MissingShards)
	}
	dir := path.Dir(m.Snapshot.Key)
	for i, sh := range m.Shards {
		want := testShards[i]
		if sh.Name != want.Name || sh.Resources[0].Resource != want.Resources[0].Resource || sh.Etcd.Member != ShardPod(want.Name) {
			t.Errorf("shards[%d] = %+v, want shard %s from pod %s", i, sh, want.Name, ShardPod(want.Name))
		}
		if sh.Snapshot.Key != dir+"/snapshot-"+want.Name+".db" || sh.Snapshot.Size != int64(len(fx.snapshot)) || sh.Etcd.Revision != 456 || sh.Snapshot.SHA256 == "" {
			t.Errorf("shards[%d] snapshot %+v etcd %+v", i, sh.Snapshot, sh.Etcd)
		}
		obj, ok := fx.store.object(sh.Snapshot.Key)
		if !ok || !bytes.Equal(obj.Data, fx.snapshot) {
			t.Errorf("object %s missing or not the shard's snapshot", sh.Snapshot.Key)
		}
	}
	// Every snapshot's revision is fixed before the API comes back.
	j := fx.j.get()
	scaleUp := slices.IndexFunc(j, func(e string) bool { return strings.HasPrefix(e, "scale ") && !strings.HasSuffix(e, "=0") })
	for _, want := range []string{"exec snapshot-save", "exec snapshot-save in etcd-events-0", "exec snapshot-save in etcd-leases-0"} {
		if i := slices.Index(j, want); i < 0 || i > scaleUp {
			t.Errorf("%q at %d, scale-up at %d: %q", want, i, scaleUp, j)
		}
	}
	if files := fx.exec.fileNames(); len(files) != 0 {
		t.Errorf("files left in the pods: %q", files)
	}
	for name, n := range fx.replicas(t) {
		if n != deploymentReplicas[name] {
			t.Errorf("%s has %d replicas, want %d", name, n, deploymentReplicas[name])
		}
	}
}

// TestBackupShardFailureUndoes proves that a shard whose snapshot cannot be
// started stops the backup with its name, and that the undo cleans every
// pod and brings the API back.
func TestBackupShardFailureUndoes(t *testing.T) {
	fx := shardFixture(t)
	fx.exec.fail["snapshot-save in etcd-leases-0"] = errors.New("no space left on device")
	s := fx.state(defaultOptions())
	err := fx.execute(s)
	if err == nil || !strings.Contains(err.Error(), "etcd shard leases:") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %v, want one line naming the shard", err)
	}
	if files := fx.exec.fileNames(); len(files) != 0 {
		t.Errorf("files left in the pods: %q", files)
	}
	for name, n := range fx.replicas(t) {
		if n != deploymentReplicas[name] {
			t.Errorf("%s has %d replicas, want %d", name, n, deploymentReplicas[name])
		}
	}
	if s.Out.ManifestKey != "" {
		t.Error("a manifest was written")
	}
}

// TestBackupShardsRefused proves what preflight refuses of a sharded
// cluster, with one line that says what to do, before anything changed: a
// streamed backup (shard snapshots are taken in the pods), and a shard
// whose member pod is missing.
func TestBackupShardsRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  func(*Options)
		setup func(*fixture)
		want  []string
	}{
		{name: "stream", opts: func(o *Options) { o.Via = ViaStream },
			want: []string{"etcd shards events (events), leases (leases.coordination.k8s.io)", "--via exec", "--without-shards"}},
		{name: "missing pod", setup: func(fx *fixture) {
			_ = fx.kube.CoreV1().Pods(testHCPNS).Delete(context.Background(), ShardPod("leases"), metav1.DeleteOptions{})
		}, want: []string{"etcd shard leases: etcd pod etcd-leases-0 not found", "--without-shards"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := shardFixture(t)
			if tc.setup != nil {
				tc.setup(fx)
			}
			o := defaultOptions()
			if tc.opts != nil {
				tc.opts(&o)
			}
			err := fx.execute(fx.state(o))
			if exitcode.Of(err) != exitcode.Precondition {
				t.Fatalf("exit code %d (%v), want %d", exitcode.Of(err), err, exitcode.Precondition)
			}
			for _, want := range append([]string{"step preflight: "}, tc.want...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if patches, annotates := fx.hs.writes(); len(patches) != 0 || annotates != 0 {
				t.Errorf("HostedCluster changed: patches %q, annotations %d", patches, annotates)
			}
			if keys := fx.store.keys(); len(keys) != 0 {
				t.Errorf("objects written: %q", keys)
			}
		})
	}
}

// TestBackupWithoutShards proves that --without-shards backs up the default
// member as always and that the manifest names every shard left out.
func TestBackupWithoutShards(t *testing.T) {
	fx := newFixture(t, nil)
	fx.hs.shards = testShards
	o := defaultOptions()
	o.WithoutShards = true
	s := fx.state(o)
	if err := fx.execute(s); err != nil {
		t.Fatalf("backup failed: %v", err)
	}
	m := storedManifest(t, fx, s)
	if got, want := manifest.DescribeShards(m.MissingShards), "events (events), leases (leases.coordination.k8s.io)"; got != want {
		t.Errorf("manifest missingShards %q, want %q", got, want)
	}
	if m.MissingShards[0].StorageType != "EmptyDir" || m.MissingShards[1].Replicas != 3 {
		t.Errorf("manifest shards %+v", m.MissingShards)
	}
	if m.Snapshot.Key == "" || m.Etcd.Member != "etcd-0" {
		t.Errorf("manifest of the default member: snapshot %+v, member %q", m.Snapshot, m.Etcd.Member)
	}
}

// TestBackupUnshardedManifestNamesNoShards proves that the flag changes
// nothing for a cluster without shards.
func TestBackupUnshardedManifestNamesNoShards(t *testing.T) {
	for _, without := range []bool{false, true} {
		fx := newFixture(t, nil)
		o := defaultOptions()
		o.WithoutShards = without
		s := fx.state(o)
		if err := fx.execute(s); err != nil {
			t.Fatalf("--without-shards=%v: backup failed: %v", without, err)
		}
		if m := storedManifest(t, fx, s); m.MissingShards != nil {
			t.Errorf("--without-shards=%v: manifest names shards %+v", without, m.MissingShards)
		}
	}
}

// TestBackupShardsReadError proves that a failed read of the shards stops
// the backup in preflight instead of being taken for "no shards".
func TestBackupShardsReadError(t *testing.T) {
	fx := newFixture(t, nil)
	fx.hs.shardsErr = errors.New("spec.etcd.managed.shards[0] of HostedCluster clusters/example: has no name")
	s := fx.state(defaultOptions())
	err := fx.execute(s)
	if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), "has no name") {
		t.Fatalf("error %v (exit %d), want a precondition naming the bad field", err, exitcode.Of(err))
	}
	if statuses(s.Run)[StepPause] == checkpoint.Done {
		t.Error("pause ran after the refusal")
	}
	if patches, _ := fx.hs.writes(); len(patches) != 0 {
		t.Errorf("HostedCluster patched: %q", patches)
	}
}

func storedManifest(t *testing.T, fx *fixture, s *State) *manifest.Manifest {
	t.Helper()
	obj, ok := fx.store.object(s.Out.ManifestKey)
	if !ok {
		t.Fatalf("no manifest at %q", s.Out.ManifestKey)
	}
	m, err := manifest.Decode(obj.Data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
