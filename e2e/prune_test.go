//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/hcpsnap/hcpsnap/manifest"
)

// The tests of hcpsnap prune write synthetic backups (small snapshots
// whose size and run metadata match their manifests, manifests, key
// bundles) with chosen timestamps under a prefix of their own, run the
// built binary, and check what is left with the aws CLI: an independent
// client.

// uniquePrefix returns a fresh key prefix, so that the tests never see
// each other's objects.
func uniquePrefix(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return name + "-" + hex.EncodeToString(b[:])
}

// synthetic writes objects of test backups into a bucket.
type synthetic struct {
	t         *testing.T
	client    *s3.Client
	bucket    string
	prefix    string
	keyPrefix string
	// lockUntil, when set, puts every object under a governance retention.
	lockUntil *time.Time
}

func (e *testEnv) synthetic(t *testing.T, prefix string) *synthetic {
	return &synthetic{t: t, client: e.s3Client(e.vars["AWS_SECRET_ACCESS_KEY"]), bucket: e.bucket, prefix: prefix, keyPrefix: prefix + "-keys"}
}

func (s *synthetic) put(key string, body []byte, meta map[string]string) {
	s.t.Helper()
	in := &s3.PutObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key), Body: bytes.NewReader(body), Metadata: meta,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256}
	if s.lockUntil != nil {
		in.ObjectLockMode = types.ObjectLockModeGovernance
		in.ObjectLockRetainUntilDate = s.lockUntil
	}
	if _, err := s.client.PutObject(context.Background(), in); err != nil {
		s.t.Fatalf("put %s: %v", key, err)
	}
}

// backup writes a complete backup of cluster at ts and returns its keys.
func (s *synthetic) backup(cluster, ts string) []string {
	folder := s.prefix + "/" + cluster + "/" + ts + "/"
	run := "synthetic-" + ts
	snap := []byte("not a real snapshot, but its size and run match the manifest: " + ts)
	bundle := s.keyPrefix + "/" + cluster + "/" + ts + "/" + manifest.KeyBundleObject
	started, _ := time.Parse(manifest.TimestampFormat, ts)
	m := manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: run, Cluster: cluster, Namespace: "clusters", HCPNamespace: "clusters-" + cluster,
		Snapshot:  manifest.Object{Bucket: s.bucket, Key: folder + manifest.SnapshotObject, Size: int64(len(snap))},
		KeyBundle: manifest.KeyBundle{Bucket: s.bucket, Key: bundle, Secrets: []string{}},
		Times:     manifest.Times{Started: started, Finished: started.Add(time.Minute)}}
	data, err := json.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	s.put(folder+manifest.SnapshotObject, snap, map[string]string{manifest.MetaRunID: run})
	s.put(bundle, []byte(`{"apiVersion":"v1","kind":"List","items":[]}`), map[string]string{manifest.MetaRunID: run})
	s.put(folder+manifest.ManifestObject, data, nil)
	return s.keys(cluster, ts)
}

// keys are the objects a backup owns.
func (s *synthetic) keys(cluster, ts string) []string {
	return []string{
		s.prefix + "/" + cluster + "/" + ts + "/" + manifest.ManifestObject,
		s.prefix + "/" + cluster + "/" + ts + "/" + manifest.SnapshotObject,
		s.keyPrefix + "/" + cluster + "/" + ts + "/" + manifest.KeyBundleObject,
	}
}

// awsList lists every key under the prefixes with the aws CLI, sorted.
func (e *testEnv) awsList(t *testing.T, bucket string, prefixes ...string) []string {
	t.Helper()
	var keys []string
	for _, p := range prefixes {
		cmd := exec.Command("aws", "s3api", "list-objects-v2", "--bucket", bucket, "--prefix", p+"/",
			"--endpoint-url", e.vars["AWS_ENDPOINT_URL_S3"], "--query", "Contents[].Key", "--output", "json")
		for k, v := range e.vars {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"), "HOME="+t.TempDir())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("aws s3api list-objects-v2: %v: %s", err, stderr.String())
		}
		var ks []string
		if s := strings.TrimSpace(string(out)); s != "" && s != "null" {
			if err := json.Unmarshal(out, &ks); err != nil {
				t.Fatalf("aws CLI output %q: %v", out, err)
			}
		}
		keys = append(keys, ks...)
	}
	slices.Sort(keys)
	return keys
}

// pruneLine is one NDJSON line of hcpsnap prune.
type pruneLine struct {
	MessageType string   `json:"message_type"`
	Cluster     string   `json:"cluster"`
	Backup      string   `json:"backup"`
	Action      string   `json:"action"`
	Result      string   `json:"result"`
	Rules       []string `json:"rules"`
	Error       string   `json:"error"`
	Kept        int      `json:"kept"`
	Removed     int      `json:"removed"`
	Locked      int      `json:"locked"`
	Failed      int      `json:"failed"`
}

// prune runs the built binary with every cluster in reach: the
// environment's HCPSNAP_CLUSTER would otherwise limit it to that one.
func (e *testEnv) prune(t *testing.T, args ...string) hcpsnapResult {
	t.Helper()
	r := e.startHcpsnap(t, t.TempDir(), []string{"HCPSNAP_CLUSTER="}, args...)
	code := r.wait(t)
	return hcpsnapResult{r.stdout.String(), r.stderr.String(), code}
}

func pruneLines(t *testing.T, stdout string) map[string]pruneLine {
	t.Helper()
	lines := map[string]pruneLine{}
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var p pruneLine
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatalf("not NDJSON: %q", l)
		}
		switch p.MessageType {
		case "prune":
			parts := strings.Split(strings.TrimSuffix(p.Backup, "/"), "/")
			lines[p.Cluster+"/"+parts[len(parts)-1]] = p
		case "prune_summary":
			lines["summary"] = p
		}
	}
	return lines
}

func expectKeys(s *synthetic, extra []string, keep map[string][]string) []string {
	var want []string
	for c, tss := range keep {
		for _, ts := range tss {
			want = append(want, s.keys(c, ts)...)
		}
	}
	want = append(want, extra...)
	slices.Sort(want)
	return want
}

func TestPruneSyntheticHistory(t *testing.T) {
	env := loadEnv(t)
	prefix := uniquePrefix("prune-history")
	s := env.synthetic(t, prefix)
	alpha := []string{"20260310T120000Z", "20260310T060000Z", "20260309T120000Z", "20260308T120000Z", "20260301T120000Z", "20260215T120000Z", "20260115T120000Z"}
	beta := []string{"20260310T000000Z", "20260101T000000Z"}
	for _, ts := range alpha {
		s.backup("alpha", ts)
	}
	for _, ts := range beta {
		s.backup("beta", ts)
	}
	// A backup whose manifest is corrupt, and a young folder without a
	// manifest, as a backup in progress leaves it.
	corrupt := "20260105T000000Z"
	s.backup("alpha", corrupt)
	s.put(prefix+"/alpha/"+corrupt+"/"+manifest.ManifestObject, []byte("{corrupt"), nil)
	young := time.Now().UTC().Add(-time.Hour).Format(manifest.TimestampFormat)
	youngKey := prefix + "/alpha/" + young + "/" + manifest.SnapshotObject
	s.put(youngKey, []byte("in progress"), map[string]string{manifest.MetaRunID: "running"})
	all := env.awsList(t, env.bucket, prefix, s.keyPrefix)
	if len(all) != 3*(len(alpha)+len(beta)+1)+1 {
		t.Fatalf("seeded %d objects: %q", len(all), all)
	}
	flags := []string{"--prefix", prefix, "--key-prefix", s.keyPrefix}

	t.Run("bad input changes nothing", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{nil, "policy is empty"},
			{[]string{"--include-incomplete"}, "policy is empty"},
			{[]string{"--keep-last", "-2"}, "--keep-last -2 is negative"},
			{[]string{"--keep-daily", "1", "--keep-hourly", "-1"}, "--keep-hourly -1 is negative"},
			{[]string{"--keep-within", "1fortnight"}, `--keep-within "1fortnight" is not a duration`},
			{[]string{"--keep-within", "-1d"}, "--keep-within -1d is negative"},
		} {
			res := env.prune(t, append(append([]string{"prune"}, flags...), c.args...)...)
			lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
			if res.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) || res.stdout != "" {
				t.Errorf("prune %q: exit %d, stderr %q, stdout %q; want exit 2 and one line with %q", c.args, res.code, res.stderr, res.stdout, c.want)
			}
		}
		if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, all) {
			t.Fatalf("bad input changed the bucket:\n%q\n%q", got, all)
		}
	})

	policy := []string{"--keep-daily", "2", "--keep-monthly", "3"}
	t.Run("dry run changes nothing", func(t *testing.T) {
		res := env.prune(t, append(append([]string{"-o", "json", "prune", "--dry-run"}, flags...), policy...)...)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		lines := pruneLines(t, res.stdout)
		for _, ts := range []string{"20260310T060000Z", "20260308T120000Z", "20260301T120000Z"} {
			if l := lines["alpha/"+ts]; l.Result != "would-remove" || l.Action != "remove" || len(l.Rules) == 0 {
				t.Errorf("alpha/%s: %+v, want would-remove with a rule", ts, l)
			}
		}
		if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, all) {
			t.Fatalf("--dry-run changed the bucket:\n%q\n%q", got, all)
		}
		text := env.prune(t, append(append([]string{"prune", "--dry-run"}, flags...), policy...)...)
		if text.code != 0 || !strings.Contains(text.stdout, "would-remove") || !strings.Contains(text.stdout, "keep-daily 1/2") {
			t.Errorf("text dry run: exit %d\n%s", text.code, text.stdout)
		}
	})

	t.Run("policy", func(t *testing.T) {
		// Expected keeps, worked out by hand. alpha: keep-daily 2 keeps the
		// newest of 03-10 and of 03-09; keep-monthly 3 the newest of March,
		// February and January. beta: both, by either rule.
		res := env.prune(t, append(append([]string{"-o", "json", "prune"}, flags...), policy...)...)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		want := expectKeys(s, []string{youngKey, prefix + "/alpha/" + corrupt + "/" + manifest.SnapshotObject, prefix + "/alpha/" + corrupt + "/" + manifest.ManifestObject,
			s.keyPrefix + "/alpha/" + corrupt + "/" + manifest.KeyBundleObject},
			map[string][]string{"alpha": {"20260310T120000Z", "20260309T120000Z", "20260215T120000Z", "20260115T120000Z"}, "beta": beta})
		if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, want) {
			t.Fatalf("left:\n%q\nwant:\n%q", got, want)
		}
		lines := pruneLines(t, res.stdout)
		if l := lines["alpha/"+corrupt]; l.Result != "kept" || !strings.Contains(strings.Join(l.Rules, ";"), "manifest unreadable") {
			t.Errorf("the corrupt backup: %+v, want kept and reported as manifest unreadable", l)
		}
		if l := lines["alpha/20260310T120000Z"]; l.Rules[0] != "newest verified" {
			t.Errorf("the newest: rules %q", l.Rules)
		}
		if sum := lines["summary"]; sum.Removed != 3 || sum.Failed != 0 {
			t.Errorf("summary %+v, want 3 removed", sum)
		}
	})

	t.Run("keep-within counts from the newest backup, include-incomplete", func(t *testing.T) {
		// Measured from now (December 2026), 1d would keep nothing but the
		// newest; from the newest backup it keeps alpha's 03-10 and 03-09
		// (exactly 1d before: inclusive) and beta's 03-10.
		res := env.prune(t, append([]string{"-o", "json", "prune", "--keep-within", "1d", "--include-incomplete"}, flags...)...)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		want := expectKeys(s, []string{youngKey}, map[string][]string{"alpha": {"20260310T120000Z", "20260309T120000Z"}, "beta": beta[:1]})
		if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, want) {
			t.Fatalf("left:\n%q\nwant:\n%q", got, want)
		}
		if l := pruneLines(t, res.stdout)["alpha/"+young]; l.Result != "kept" || !strings.Contains(strings.Join(l.Rules, ";"), "may be a backup in progress") {
			t.Errorf("the young folder: %+v", l)
		}
	})
}

// TestPruneInterrupted kills a prune once the first object of a doomed
// backup is gone, reruns it, and checks the final state: the expected keeps
// and no orphan object. It then builds the state a crash leaves by hand (a
// tombstone, key bundle and snapshot gone) and checks that a rerun with a
// policy that keeps everything finishes it.
func TestPruneInterrupted(t *testing.T) {
	env := loadEnv(t)
	prefix := uniquePrefix("prune-kill")
	s := env.synthetic(t, prefix)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var tss []string
	for i := 0; i < 40; i++ {
		tss = append(tss, start.Add(time.Duration(i)*time.Hour).Format(manifest.TimestampFormat))
	}
	for _, ts := range tss {
		s.backup("gamma", ts)
	}
	flags := []string{"prune", "--prefix", prefix, "--key-prefix", s.keyPrefix, "--keep-last", "3"}
	// Prune works newest first, so the first doomed backup is the 4th
	// newest, and its key bundle is the first object deleted.
	first := s.keys("gamma", tss[len(tss)-4])[2]
	r := env.startHcpsnap(t, t.TempDir(), []string{"HCPSNAP_CLUSTER="}, flags...)
	deadline := time.Now().Add(time.Minute)
	killed := false
	for time.Now().Before(deadline) {
		_, err := s.client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(first)})
		if err != nil {
			if err := r.cmd.Process.Signal(syscall.SIGKILL); err == nil {
				killed = true
			}
			break
		}
		select {
		case <-r.done:
			deadline = time.Now()
		default:
		}
	}
	code := r.wait(t)
	left := env.awsList(t, env.bucket, prefix, s.keyPrefix)
	t.Logf("killed=%v exit=%d, %d of %d objects left after the kill", killed, code, len(left), 3*len(tss))
	if !killed || code != 128+int(syscall.SIGKILL) || len(left) <= 9 {
		t.Fatalf("the prune was not killed halfway (killed %v, exit %d, %d objects left): the test needs a longer history", killed, code, len(left))
	}
	// Whatever the kill point: no backup has lost an object without its
	// tombstone.
	for _, ts := range tss {
		have := 0
		for _, k := range s.keys("gamma", ts) {
			if slices.Contains(left, k) {
				have++
			}
		}
		tomb := slices.Contains(left, prefix+"/gamma/"+ts+"/deleting.json")
		if have > 0 && have < 3 && !tomb {
			t.Fatalf("gamma/%s is half deleted without a tombstone: %q", ts, left)
		}
	}
	res := env.prune(t, flags...)
	if res.code != 0 {
		t.Fatalf("rerun: exit %d: %s", res.code, res.stderr)
	}
	want := expectKeys(s, nil, map[string][]string{"gamma": tss[len(tss)-3:]})
	if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, want) {
		t.Fatalf("after the rerun:\n%q\nwant:\n%q", got, want)
	}

	// The half-deleted state, built by hand.
	half := tss[len(tss)-3]
	keys := s.keys("gamma", half)
	s.put(prefix+"/gamma/"+half+"/deleting.json", []byte(`{"schemaVersion":1,"keyBundle":"`+keys[2]+`"}`), nil)
	for _, k := range []string{keys[2], keys[1]} {
		if _, err := s.client.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	res = env.prune(t, "-o", "json", "prune", "--prefix", prefix, "--key-prefix", s.keyPrefix, "--keep-last", "10")
	if res.code != 0 {
		t.Fatalf("finishing: exit %d: %s", res.code, res.stderr)
	}
	if l := pruneLines(t, res.stdout)["gamma/"+half]; l.Action != "finish-removal" || l.Result != "removed" {
		t.Errorf("the half-deleted backup: %+v", l)
	}
	want = expectKeys(s, nil, map[string][]string{"gamma": tss[len(tss)-2:]})
	if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, want) {
		t.Fatalf("after finishing:\n%q\nwant:\n%q", got, want)
	}
}

// TestPruneObjectLock: on a bucket with object lock, a backup under a
// retention date is reported as locked and left whole, the prune goes on
// and ends with exit 0.
func TestPruneObjectLock(t *testing.T) {
	env := loadEnv(t)
	client := env.s3Client(env.vars["AWS_SECRET_ACCESS_KEY"])
	bucket := uniquePrefix("prune-lock")
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("create a bucket with object lock: %v", err)
	}
	s := &synthetic{t: t, client: client, bucket: bucket, prefix: "backups", keyPrefix: "hcpsnap-keys"}
	s.backup("delta", "20260301T000000Z")
	s.backup("delta", "20260201T000000Z")
	until := time.Now().Add(time.Hour).UTC()
	s.lockUntil = &until
	s.backup("delta", "20260101T000000Z")
	before := env.awsList(t, bucket, "backups", "hcpsnap-keys")
	res := env.prune(t, "-o", "json", "prune", "--bucket", bucket, "--keep-last", "1")
	if res.code != 0 {
		t.Fatalf("exit %d, want 0 (a lock is reported, not a failure): %s", res.code, res.stderr)
	}
	lines := pruneLines(t, res.stdout)
	if l := lines["delta/20260101T000000Z"]; l.Result != "locked" || !strings.Contains(l.Error, "retained until") {
		t.Errorf("the locked backup: %+v", l)
	}
	if l := lines["delta/20260201T000000Z"]; l.Result != "removed" {
		t.Errorf("the unlocked backup: %+v", l)
	}
	want := expectKeys(s, nil, map[string][]string{"delta": {"20260301T000000Z", "20260101T000000Z"}})
	if got := env.awsList(t, bucket, "backups", "hcpsnap-keys"); !slices.Equal(got, want) {
		t.Fatalf("left:\n%q\nwant:\n%q\n(before %q)", got, want, before)
	}
}

// TestBackupPrune: backup --prune prunes nothing when the backup fails, and
// after a backup that completed keeps only it with --keep-last 1.
func TestBackupPrune(t *testing.T) {
	env := loadEnv(t)
	prefix := uniquePrefix("backup-prune")
	s := env.synthetic(t, prefix)
	old := s.backup(env.cluster, "20260101T000000Z")
	slices.Sort(old)
	flags := []string{"-o", "json", "backup", "--online", "--prefix", prefix, "--key-prefix", s.keyPrefix, "--prune", "--keep-last", "1"}

	failed := env.hcpsnap(t, t.TempDir(), append(flags, "--member", "etcd-9")...)
	if failed.code == 0 {
		t.Fatalf("a backup of a missing member succeeded: %s", failed.stdout)
	}
	if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, old) {
		t.Fatalf("a failed backup pruned:\n%q\nwant:\n%q", got, old)
	}
	if strings.Contains(failed.stdout, `"message_type":"prune`) {
		t.Errorf("a failed backup printed prune lines: %s", failed.stdout)
	}

	res := env.hcpsnap(t, t.TempDir(), flags...)
	if res.code != 0 {
		t.Fatalf("backup --prune: exit %d: %s", res.code, res.stderr)
	}
	m := env.readManifest(t, lastSummary(t, res.stdout).Manifest)
	folder := strings.TrimSuffix(m.Snapshot.Key, "/"+manifest.SnapshotObject)
	want := []string{folder + "/" + manifest.ManifestObject, folder + "/" + manifest.SnapshotObject, m.KeyBundle.Key}
	slices.Sort(want)
	if got := env.awsList(t, env.bucket, prefix, s.keyPrefix); !slices.Equal(got, want) {
		t.Fatalf("after backup --prune:\n%q\nwant only the new backup:\n%q", got, want)
	}
	lines := pruneLines(t, onlyPrune(res.stdout))
	if l := lines[env.cluster+"/20260101T000000Z"]; l.Result != "removed" {
		t.Errorf("the old backup: %+v", l)
	}
}

// onlyPrune keeps the prune lines of a backup's NDJSON output.
func onlyPrune(stdout string) string {
	var keep []string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Contains(l, `"message_type":"prune`) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
