package steps

import (
	"errors"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/manifest"
)

var testShards = []kube.EtcdShard{
	{Name: "events", Replicas: 1, StorageType: "EmptyDir", Resources: []kube.EtcdShardResource{{Resource: "events"}}},
	{Name: "leases", Replicas: 3, Resources: []kube.EtcdShardResource{{APIGroup: "coordination.k8s.io", Resource: "leases"}}},
}

// TestBackupRefusesShards proves that a HostedCluster with etcd shards is
// refused in preflight, with one line that names the shards and their
// resources and the way out, before anything is changed anywhere.
func TestBackupRefusesShards(t *testing.T) {
	fx := newFixture(t, nil)
	fx.hs.shards = testShards
	s := fx.state(defaultOptions())
	err := fx.execute(s)
	if exitcode.Of(err) != exitcode.Precondition {
		t.Fatalf("exit code %d (%v), want %d", exitcode.Of(err), err, exitcode.Precondition)
	}
	msg := err.Error()
	for _, want := range []string{"step preflight: ", "etcd shards events (events), leases (leases.coordination.k8s.io)",
		"does not back up etcd shards yet", "would miss the data", "--without-shards"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	if patches, annotates := fx.hs.writes(); len(patches) != 0 || annotates != 0 {
		t.Errorf("HostedCluster changed: patches %q, annotations %d", patches, annotates)
	}
	if got := fx.j.get(); len(got) != 0 {
		t.Errorf("actions after the refusal: %q", got)
	}
	if keys := fx.store.keys(); len(keys) != 0 {
		t.Errorf("objects written: %q", keys)
	}
	for name, n := range fx.replicas(t) {
		if n != deploymentReplicas[name] {
			t.Errorf("%s has %d replicas, want %d", name, n, deploymentReplicas[name])
		}
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
