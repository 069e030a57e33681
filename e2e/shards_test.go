//go:build e2e

package e2e

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// The tests of HostedClusters with etcd shards need an environment started
// with ETCD_SHARDS=events (`make e2e-shards`) and skip on any other.
// hcpsnap takes a snapshot of each shard beside the default member's, in
// the same offline window (in the pods: a streamed backup of a sharded
// cluster is refused), and with --without-shards takes the default member
// only and says so.

// shardsEnv returns the environment and its etcd shards, or skips.
func shardsEnv(t *testing.T) (*testEnv, []fixture.Shard) {
	t.Helper()
	env := loadEnv(t)
	v := env.vars["LOCALENV_ETCD_SHARDS"]
	if v == "" {
		t.Skip("the environment has no etcd shards: start it with ETCD_SHARDS=events (make e2e-shards)")
	}
	var shards []fixture.Shard
	for _, s := range strings.Split(v, ",") {
		name, ip, ok := strings.Cut(s, "=")
		if !ok {
			t.Fatalf("LOCALENV_ETCD_SHARDS=%q: entry %q is not name=ip", v, s)
		}
		shards = append(shards, fixture.Shard{Name: name, MemberIP: ip})
	}
	return env, shards
}

func (e *testEnv) shardFixtureConfig(shards []fixture.Shard) fixture.Config {
	c := e.FixtureConfig()
	c.Shards = shards
	return c
}

// shardKeys counts the keys under prefix ("": every key), at rev (0: the
// latest).
func shardKeys(t *testing.T, cli *clientv3.Client, prefix string, rev int64) int64 {
	t.Helper()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
	if prefix == "" {
		prefix, opts[0] = "\x00", clientv3.WithFromKey()
	}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestShardsLocalEnv checks the layout the other tests rely on: the
// HostedCluster names the shard (the CRD kept it), its member is a real etcd
// holding the routed resource's keys, and the default members hold none.
func TestShardsLocalEnv(t *testing.T) {
	env, shards := shardsEnv(t)
	got, err := env.hyper.GetEtcdShards(context.Background(), env.namespace, env.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(shards) || got[0].Name != shards[0].Name || got[0].ResourceNames() != shards[0].Name || got[0].StorageType != "EmptyDir" {
		t.Fatalf("HostedCluster shards %+v, want %+v", got, shards)
	}
	def, err := fixture.EtcdClient(env.FixtureConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	for _, s := range shards {
		cli, err := fixture.ShardEtcdClient(env.shardFixtureConfig(shards), s)
		if err != nil {
			t.Fatal(err)
		}
		prefix := fixture.ShardKeyPrefix(s.Name, env.hcpNamespace)
		if n := shardKeys(t, cli, prefix, 0); n != fixture.ShardFillKeys {
			t.Errorf("shard %s holds %d keys under %s, want %d", s.Name, n, prefix, fixture.ShardFillKeys)
		}
		cli.Close()
		if n := shardKeys(t, def, "/kubernetes.io/"+s.Name+"/", 0); n != 0 {
			t.Errorf("the default members hold %d keys of the %s shard's resource", n, s.Name)
		}
	}
}

// TestShardsBackupRefused: a streamed backup of a sharded cluster, and its
// dry run, end with exit 3 and one line naming the shard and the way out,
// before anything changed; a streamed fleet backup fails that cluster's
// line the same way.
func TestShardsBackupRefused(t *testing.T) {
	env, shards := shardsEnv(t)
	before := env.state(t)
	objsBefore := env.listObjects(t, "")
	for _, args := range [][]string{{"backup", "--via", "stream"}, {"backup", "--dry-run", "--via", "stream"}} {
		res := env.hcpsnap(t, t.TempDir(), args...)
		if res.code != int(exitcode.Precondition) {
			t.Fatalf("%v: exit %d, want %d\nstderr:\n%s", args, res.code, exitcode.Precondition, res.stderr)
		}
		line := lastLine(res.stderr)
		for _, want := range []string{"etcd shards " + shards[0].Name + " (" + shards[0].Name + ")", "pass --via exec", "--without-shards"} {
			if !strings.Contains(line, want) {
				t.Errorf("%v: last line %q lacks %q", args, line, want)
			}
		}
	}
	r := env.startHcpsnap(t, t.TempDir(), noClusterEnv, "backup", "--all-namespaces", "--via", "stream")
	code := r.wait(t)
	stdout, stderr := r.stdout.String(), r.stderr.String()
	if code != int(exitcode.Partial) {
		t.Fatalf("fleet: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitcode.Partial, stdout, stderr)
	}
	if !strings.Contains(stdout, "0 of 1 clusters backed up") || !strings.Contains(stdout, "etcd shards "+shards[0].Name) {
		t.Errorf("fleet summary does not name the refused sharded cluster:\n%s", stdout)
	}
	env.checkClusterAsBefore(t, before)
	if got := env.listObjects(t, ""); strings.Join(got, ",") != strings.Join(objsBefore, ",") {
		t.Errorf("a refused backup changed the bucket: %v → %v", objsBefore, got)
	}
}

// TestShardsBackup: a backup of a sharded cluster takes the default
// member's and each shard's snapshot, leaves the cluster as it was, and
// writes one manifest listing them; etcdutl's status of each object equals
// the manifest, the shard's snapshot holds exactly the shard's keys at its
// revision and the default member's none of them; the drill passes for
// every snapshot; and restore patches the render for the default member and
// says plainly that the shard cannot be restored through HyperShift's API.
func TestShardsBackup(t *testing.T) {
	env, shards := shardsEnv(t)
	before := env.state(t)
	dry := env.hcpsnap(t, t.TempDir(), "backup", "--dry-run")
	if dry.code != 0 || !strings.Contains(dry.stdout, "etcd shard "+shards[0].Name+": start `etcdctl snapshot save") {
		t.Fatalf("dry run exit %d does not plan the shard's snapshot:\n%s\n%s", dry.code, dry.stdout, dry.stderr)
	}
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--prefix", "sharded")
	if res.code != 0 {
		t.Fatalf("backup exit %d\nstderr:\n%s", res.code, res.stderr)
	}
	env.checkClusterAsBefore(t, before)
	sum := lastSummary(t, res.stdout)
	m := env.readManifest(t, sum.Manifest)
	if m.SchemaVersion != manifest.SchemaVersionShards || len(m.Shards) != len(shards) || m.MissingShards != nil {
		t.Fatalf("manifest schema %d, shards %+v, missing %+v", m.SchemaVersion, m.Shards, m.MissingShards)
	}
	env.checkSnapshot(t, m)
	prefix := fixture.ShardKeyPrefix(shards[0].Name, env.hcpNamespace)
	for i, sh := range m.Shards {
		if sh.Name != shards[i].Name || sh.Etcd.Member != "etcd-"+shards[i].Name+"-0" || sh.Snapshot.Key != path.Dir(m.Snapshot.Key)+"/snapshot-"+sh.Name+".db" {
			t.Errorf("shards[%d] = %+v", i, sh)
		}
		env.checkSnapshot(t, m.ForShard(i))
		if i >= len(sum.Shards) || sum.Shards[i].Snapshot != "s3://"+env.bucket+"/"+sh.Snapshot.Key {
			t.Errorf("summary shards %+v lack %s", sum.Shards, sh.Snapshot.Key)
		}
	}
	// The shard's snapshot holds what its member held at that revision, and
	// the default member's snapshot none of it.
	cli, err := fixture.ShardEtcdClient(env.shardFixtureConfig(shards), shards[0])
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	shardSnap := filepath.Join(t.TempDir(), "shard.db")
	if err := os.WriteFile(shardSnap, env.get(t, "s3://"+env.bucket+"/"+m.Shards[0].Snapshot.Key), 0o600); err != nil {
		t.Fatal(err)
	}
	restoredShard := startRestoredEtcd(t, env, shardSnap)
	if got, want := shardKeys(t, restoredShard, "", 0), shardKeys(t, cli, "", m.Shards[0].Etcd.Revision); got != want || got < fixture.ShardFillKeys {
		t.Errorf("restored shard snapshot holds %d keys, the shard's member held %d at revision %d", got, want, m.Shards[0].Etcd.Revision)
	}
	if n := shardKeys(t, restoredShard, prefix, 0); n != fixture.ShardFillKeys {
		t.Errorf("restored shard snapshot holds %d keys under %s, want %d", n, prefix, fixture.ShardFillKeys)
	}

	line, _ := env.drill(t, 0, "--from", sum.Manifest)
	if !line.OK || len(line.Shards) != 1 || !line.Shards[0].OK || line.Shards[0].Shard != shards[0].Name {
		t.Fatalf("drill of the sharded backup: %+v", line)
	}
	if r := line.Shards[0].Result; r == nil || r.Revision != m.Shards[0].Etcd.Revision+1_000_000_000 || r.Contents.Resources[shards[0].Name] != fixture.ShardFillKeys {
		t.Errorf("shard drill result %+v, want revision %d+1e9 and %d %s", r, m.Shards[0].Etcd.Revision, fixture.ShardFillKeys, shards[0].Name)
	}

	out := filepath.Join(t.TempDir(), "cluster.yaml")
	res = env.hcpsnap(t, t.TempDir(), "restore", "--from", sum.Manifest, "-f", renderFile, "--out", out)
	if res.code != 0 {
		t.Fatalf("restore exit %d:\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"snapshots of the etcd shards " + shards[0].Name + " (" + shards[0].Name + ")", "no restoreSnapshotURL for a shard", m.Shards[0].Snapshot.Key} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("restore does not warn %q:\n%s", want, res.stderr)
		}
	}
	hc, _ := readResult(t, out)
	snap := filepath.Join(t.TempDir(), "snapshot.db")
	download(t, hc.Spec.Etcd.Managed.Storage.RestoreSnapshotURL[0], snap)
	if n := shardKeys(t, startRestoredEtcd(t, env, snap), prefix, 0); n != 0 {
		t.Errorf("the default member's snapshot holds %d keys of the shard", n)
	}
}

// TestShardsBackupWithoutShards: --without-shards backs up the default
// member, the manifest names the missing shard, the snapshot indeed lacks
// the shard's keys, and restore warns that the restored cluster lacks them.
func TestShardsBackupWithoutShards(t *testing.T) {
	env, shards := shardsEnv(t)
	before := env.state(t)
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--without-shards", "--prefix", "shards")
	if res.code != 0 {
		t.Fatalf("backup --without-shards exit %d\nstderr:\n%s", res.code, res.stderr)
	}
	env.checkClusterAsBefore(t, before)
	sum := lastSummary(t, res.stdout)
	m := env.readManifest(t, sum.Manifest)
	env.checkSnapshot(t, m)
	want := []manifest.Shard{{Name: shards[0].Name, Replicas: 1, StorageType: "EmptyDir",
		Resources: []manifest.ShardResource{{Resource: shards[0].Name}}}}
	if manifest.DescribeShards(m.MissingShards) != manifest.DescribeShards(want) || m.MissingShards[0].StorageType != "EmptyDir" {
		t.Fatalf("manifest missingShards %+v, want %+v", m.MissingShards, want)
	}

	out := filepath.Join(t.TempDir(), "cluster.yaml")
	res = env.hcpsnap(t, t.TempDir(), "restore", "--from", sum.Snapshot, "-f", renderFile, "--out", out)
	if res.code != 0 {
		t.Fatalf("restore exit %d:\n%s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, "without the cluster's etcd shards "+shards[0].Name+" ("+shards[0].Name+")") ||
		!strings.Contains(res.stderr, "will lack every object of those resources") {
		t.Errorf("restore does not warn of the missing shard:\n%s", res.stderr)
	}

	// What the warning says is so: the snapshot holds none of the shard's
	// keys, which the shard's member holds.
	hc, _ := readResult(t, out)
	snap := filepath.Join(t.TempDir(), "snapshot.db")
	download(t, hc.Spec.Etcd.Managed.Storage.RestoreSnapshotURL[0], snap)
	restored := startRestoredEtcd(t, env, snap)
	prefix := fixture.ShardKeyPrefix(shards[0].Name, env.hcpNamespace)
	if n := shardKeys(t, restored, prefix, 0); n != 0 {
		t.Errorf("the default member's snapshot holds %d keys of the shard", n)
	}
	if n := shardKeys(t, restored, "", 0); n < 100 {
		t.Errorf("the restored snapshot holds only %d keys", n)
	}
}
