package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"testing"

	charmlog "github.com/charmbracelet/log"

	"github.com/hcpsnap/hcpsnap/drill"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
)

func TestVerifyValidate(t *testing.T) {
	tests := []struct {
		name string
		o    VerifyOptions
		want string
	}{
		{"from and latest", VerifyOptions{From: "s3://bkt/backups/x/t/manifest.json", Latest: true}, "name the backup twice"},
		{"key file for every cluster", VerifyOptions{KeyFile: "k.json", S3: S3Options{Bucket: "bkt"}}, "belongs to one backup"},
		{"no bucket", VerifyOptions{}, "--bucket is required"},
		{"a from that is no backup", VerifyOptions{From: "s3://bkt/backups/x/t/other.txt"}, "manifest.json or snapshot.db"},
		{"bad cluster name", VerifyOptions{Cluster: "Not_A_Name", Latest: true, S3: S3Options{Bucket: "bkt"}}, "not a valid Kubernetes name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.Global = &GlobalOptions{Output: OutputText}
			err := tt.o.Validate()
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v (exit %d), want a usage error with %q", err, exitcode.Of(err), tt.want)
			}
		})
	}
}

// TestVerifyDrillsEveryClustersNewest: without --from and --cluster the
// newest backup of each cluster is drilled, each outcome is reported, and
// the worst decides the exit code (unusable before key mismatch).
func TestVerifyDrillsEveryClustersNewest(t *testing.T) {
	store := &backupsStore{objects: map[string]string{
		"backups/good/20260101T000000Z/manifest.json":     manifestOf(t, "clusters", "good", "2026-01-01T00:00:00Z"),
		"backups/good/20260102T000000Z/manifest.json":     manifestOf(t, "clusters", "good", "2026-01-02T00:00:00Z"),
		"backups/wrongkey/20260101T000000Z/manifest.json": manifestOf(t, "clusters", "wrongkey", "2026-01-01T00:00:00Z"),
		"backups/broken/20260101T000000Z/manifest.json":   manifestOf(t, "clusters", "broken", "2026-01-01T00:00:00Z"),
	}}
	fake := func(_ context.Context, _ restore.Store, b *restore.Backup, _ drill.Options) (*drill.Result, error) {
		res := &drill.Result{Manifest: b.ManifestKey, Checks: []drill.Check{{Name: "secrets", OK: b.Manifest.Cluster != "wrongkey", Detail: "the key bundle decrypts 0 of 3 aescbc Secrets"}}}
		switch b.Manifest.Cluster {
		case "wrongkey":
			return res, fmt.Errorf("%w: secrets: 0 of 3", drill.ErrKeyMismatch)
		case "broken":
			return res, fmt.Errorf("step fetch-snapshot: %w: snapshot stream ended after 10 of 20 bytes", drill.ErrUnusable)
		}
		return res, nil
	}
	ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
	for _, format := range []string{OutputText, OutputJSON} {
		t.Run(format, func(t *testing.T) {
			var out bytes.Buffer
			o := &VerifyOptions{Prefix: "backups", Drill: true, ScratchDir: t.TempDir(), S3: S3Options{Bucket: "bkt"},
				Global: &GlobalOptions{Output: format}, Out: &out, store: store, drill: fake}
			err := o.Run(ctx)
			if exitcode.Of(err) != exitcode.Unusable || !strings.Contains(err.Error(), "2 of 3 backups failed") {
				t.Fatalf("Run = %v (exit %d), want exit 7", err, exitcode.Of(err))
			}
			if format == OutputText {
				for _, w := range []string{"drill clusters/good: OK", "drill clusters/wrongkey: FAILED (exit 8)", "drill clusters/broken: FAILED (exit 7)",
					"needs about", "backups/good/20260102T000000Z/manifest.json"} {
					if !strings.Contains(out.String(), w) {
						t.Errorf("report lacks %q:\n%s", w, out.String())
					}
				}
				if strings.Contains(out.String(), "20260101T000000Z/manifest.json (s3://bkt/backups/good") {
					t.Errorf("an older backup of good was drilled")
				}
				return
			}
			var codes []string
			plans := 0
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var o verifyOutcome
				if err := json.Unmarshal([]byte(line), &o); err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				if o.MessageType == "drill_plan" {
					plans++
					continue
				}
				codes = append(codes, fmt.Sprintf("%s=%d", o.Cluster, o.ExitCode))
			}
			sort.Strings(codes)
			if got := strings.Join(codes, " "); got != "clusters/broken=7 clusters/good=0 clusters/wrongkey=8" {
				t.Errorf("outcomes = %s", got)
			}
			if plans != 3 {
				t.Errorf("%d drill_plan lines, want one per backup, before its drill", plans)
			}
		})
	}
}

func TestVerifyExitCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want exitcode.Code
	}{
		{"passes", nil, exitcode.OK},
		{"unusable", fmt.Errorf("step etcd-restore: %w: x", drill.ErrUnusable), exitcode.Unusable},
		{"key mismatch", fmt.Errorf("%w: secrets", drill.ErrKeyMismatch), exitcode.KeyMismatch},
		{"no space", fmt.Errorf("step check-space: %w in /tmp", drill.ErrNoSpace), exitcode.Precondition},
		{"a bug", errors.New("boom"), exitcode.Internal},
	}
	store := &backupsStore{objects: map[string]string{"backups/c/t/manifest.json": manifestOf(t, "clusters", "c", "2026-01-01T00:00:00Z")}}
	ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &VerifyOptions{From: "s3://bkt/backups/c/t/manifest.json", Drill: true, ScratchDir: t.TempDir(),
				Global: &GlobalOptions{Output: OutputText}, Out: io.Discard, store: store,
				S3: S3Options{PartSizeMiB: 16, Concurrency: 4},
				drill: func(context.Context, restore.Store, *restore.Backup, drill.Options) (*drill.Result, error) {
					return &drill.Result{}, tt.err
				}}
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := exitcode.Of(o.Run(ctx)); got != tt.want {
				t.Errorf("exit %d, want %d", got, tt.want)
			}
		})
	}
}

// TestVerifyInterrupted: SIGINT (a cancelled context) ends verify with 130,
// not with a verdict on the backup.
func TestVerifyInterrupted(t *testing.T) {
	store := &backupsStore{objects: map[string]string{"backups/c/t/manifest.json": manifestOf(t, "clusters", "c", "2026-01-01T00:00:00Z")}}
	ctx, cancel := context.WithCancel(charmlog.WithContext(context.Background(), charmlog.New(io.Discard)))
	defer cancel()
	o := &VerifyOptions{Prefix: "backups", Drill: true, ScratchDir: t.TempDir(), S3: S3Options{Bucket: "bkt"},
		Global: &GlobalOptions{Output: OutputText}, Out: io.Discard, store: store,
		drill: func(ctx context.Context, _ restore.Store, _ *restore.Backup, _ drill.Options) (*drill.Result, error) {
			cancel()
			return nil, fmt.Errorf("step start-etcd: %w", ctx.Err())
		}}
	if got := exitcode.Of(o.Run(ctx)); got != exitcode.Interrupted {
		t.Errorf("exit %d, want %d", got, exitcode.Interrupted)
	}
}

// TestVerifyWithoutDrill: the cheap check finds a snapshot missing from
// the bucket (the fake bucket holds manifests only).
func TestVerifyWithoutDrill(t *testing.T) {
	store := &backupsStore{objects: map[string]string{"backups/c/t/manifest.json": manifestOf(t, "clusters", "c", "2026-01-01T00:00:00Z")}}
	ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
	var out bytes.Buffer
	o := &VerifyOptions{Cluster: "c", Prefix: "backups", S3: S3Options{Bucket: "bkt"},
		Global: &GlobalOptions{Output: OutputText}, Out: &out, store: store}
	err := o.Run(ctx)
	if exitcode.Of(err) != exitcode.Unusable || !strings.Contains(err.Error(), "missing from the bucket") {
		t.Errorf("Run = %v, want exit 7 for the missing snapshot", err)
	}
	if !strings.Contains(out.String(), "check clusters/c: FAILED (exit 7)") {
		t.Errorf("report:\n%s", out.String())
	}
}

// TestVerifyFromIgnoresClusterFromTheEnvironment: HCPSNAP_CLUSTER in a CI
// job's environment must not turn --from into a usage error.
func TestVerifyFromIgnoresClusterFromTheEnvironment(t *testing.T) {
	o := &VerifyOptions{From: "s3://bkt/backups/x/t/snapshot.db", Cluster: "x", S3: S3Options{PartSizeMiB: 16, Concurrency: 4},
		Global: &GlobalOptions{Output: OutputText}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.manifestKey != "backups/x/t/manifest.json" || o.S3.Bucket != "bkt" || o.Cluster != "" {
		t.Errorf("manifest %q bucket %q cluster %q", o.manifestKey, o.S3.Bucket, o.Cluster)
	}
}

// TestVerifyDrillsEachShard: a backup with etcd shard snapshots is drilled
// snapshot by snapshot, each shard through a manifest that names its own
// object and revision; a failed shard fails the backup with its code and
// name, and the report shows every shard.
func TestVerifyDrillsEachShard(t *testing.T) {
	var m manifest.Manifest
	if err := json.Unmarshal([]byte(manifestOf(t, "clusters", "c", "2026-01-01T00:00:00Z")), &m); err != nil {
		t.Fatal(err)
	}
	m.SchemaVersion, m.Etcd.Revision = manifest.SchemaVersionShards, 100
	for i, name := range []string{"events", "leases"} {
		m.Shards = append(m.Shards, manifest.ShardSnapshot{Shard: manifest.Shard{Name: name, Resources: []manifest.ShardResource{{Resource: name}}},
			Etcd: manifest.Etcd{Revision: int64(200 + i)}, Snapshot: manifest.Object{Key: "backups/c/t/snapshot-" + name + ".db"}})
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	store := &backupsStore{objects: map[string]string{"backups/c/t/manifest.json": string(data)}}
	ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
	var drilled []string
	fake := func(_ context.Context, _ restore.Store, b *restore.Backup, _ drill.Options) (*drill.Result, error) {
		drilled = append(drilled, fmt.Sprintf("%s@%d", path.Base(b.Manifest.Snapshot.Key), b.Manifest.Etcd.Revision))
		if len(b.Manifest.Shards) != 0 && path.Base(b.Manifest.Snapshot.Key) != "snapshot.db" {
			t.Errorf("drill of %s sees shards", b.Manifest.Snapshot.Key)
		}
		res := &drill.Result{Checks: []drill.Check{{Name: "revision", OK: true, Detail: "as recorded"}}}
		if strings.HasSuffix(b.Manifest.Snapshot.Key, "leases.db") {
			return res, fmt.Errorf("step fetch-snapshot: %w: snapshot missing", drill.ErrUnusable)
		}
		return res, nil
	}
	var out bytes.Buffer
	o := &VerifyOptions{From: "s3://bkt/backups/c/t/manifest.json", Drill: true, ScratchDir: t.TempDir(), S3: S3Options{PartSizeMiB: 16, Concurrency: 4},
		Global: &GlobalOptions{Output: OutputText}, Out: &out, store: store, drill: fake}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	err = o.Run(ctx)
	if exitcode.Of(err) != exitcode.Unusable || !strings.Contains(err.Error(), "etcd shard leases: step fetch-snapshot") {
		t.Fatalf("Run = %v (exit %d), want exit 7 naming the shard", err, exitcode.Of(err))
	}
	if got := strings.Join(drilled, " "); got != "snapshot.db@100 snapshot-events.db@200 snapshot-leases.db@201" {
		t.Errorf("drilled %s", got)
	}
	for _, w := range []string{"drill clusters/c: FAILED (exit 7)", "and its 2 etcd shard snapshots", "  shard events: OK", "  shard leases: FAILED (exit 7)",
		"snapshot   s3://bkt/backups/c/t/snapshot-leases.db"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, out.String())
		}
	}
}
