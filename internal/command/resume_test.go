package command

import (
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/steps"
)

var testCluster = checkpoint.Cluster{Namespace: "clusters", Name: "example", UID: "uid-1"}

// recordedOptions are the options of a run as flags with their defaults give them.
func recordedOptions() steps.Options {
	return steps.Options{
		Cluster: "example", Namespace: "clusters", Bucket: "hcpsnap-backups", Prefix: "backups", KeyPrefix: "hcpsnap-keys",
		Member: "etcd-0", Container: "etcd", Deployments: append([]string(nil), steps.DefaultDeployments...),
		PauseTimeout: 30 * time.Minute, WaitTimeout: 5 * time.Minute,
		Etcd: steps.EtcdOptions{Etcdctl: steps.DefaultEtcdctl, Endpoint: steps.DefaultEndpoint, Cert: steps.DefaultClientCert,
			Key: steps.DefaultClientKey, SnapshotDir: steps.DefaultSnapshotDir},
	}
}

// midRun is a run that died after snapshot-save: the API is down, the
// cluster paused, the snapshot file in the pod.
func midRun(t testing.TB, mutOpts func(*steps.Options), mutOut func(*steps.Outputs, string)) *checkpoint.Run {
	t.Helper()
	r := checkpoint.New("backup", testCluster, "ci-runner-7", stepNames(), time.Date(2026, 6, 3, 14, 5, 9, 0, time.UTC))
	for _, n := range []string{steps.StepPreflight, steps.StepPause, steps.StepScaleDown, steps.StepSnapshotSave} {
		r.Step(n).Status = checkpoint.Done
	}
	o := recordedOptions()
	if mutOpts != nil {
		mutOpts(&o)
	}
	out := &steps.Outputs{
		HCPNamespace: "clusters-example", Timestamp: "20260603T140509Z",
		PausedUntil: &steps.Original{}, PauseUntil: "2026-06-03T14:35:09Z",
		Replicas: map[string]int32{"kube-apiserver": 3, "openshift-apiserver": 2, "openshift-oauth-apiserver": 1},
		CACert:   steps.CACertPath,
		Attempt:  &steps.Attempt{ID: r.RunID + "-1780495509000000000", Path: steps.SnapshotPath(o.Etcd.SnapshotDir, r.RunID)},
	}
	if mutOut != nil {
		mutOut(out, r.RunID)
	}
	var err error
	if r.Options, err = json.Marshal(o); err != nil {
		t.Fatal(err)
	}
	if r.Outputs, err = json.Marshal(out); err != nil {
		t.Fatal(err)
	}
	return r
}

// annotated is the run as it comes back from the HostedCluster annotation.
func annotated(t testing.TB, r *checkpoint.Run) *checkpoint.Run {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := checkpoint.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

func TestCheckRecorded(t *testing.T) {
	keyFile := "/home/ops/keys/example.json"
	tests := []struct {
		name    string
		run     func(t *testing.T) *checkpoint.Run
		trusted bool // this machine's run file of the same run exists
		keyOut  string
		here    func(*steps.Options) // this machine's flags, when not the defaults
		want    string               // "" accepts
		check   func(t *testing.T, r *recordedRun)
	}{
		{name: "as written", run: func(t *testing.T) *checkpoint.Run { return midRun(t, nil, nil) },
			check: func(t *testing.T, r *recordedRun) {
				if r.opts.Bucket != "hcpsnap-backups" || r.out.Replicas["kube-apiserver"] != 3 {
					t.Errorf("options or outputs lost: %+v %+v", r.opts, r.out)
				}
			}},
		{name: "snapshot path pointed at etcd's data", want: `recorded attempt path "/var/lib/data/member/snap/db"`,
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) { o.Attempt.Path = "/var/lib/data/member/snap/db" })
			}},
		{name: "etcdctl replaced by a shell command", want: `--etcdctl "/bin/sh -c id" must be a clean absolute path`,
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Etcd.Etcdctl = "/bin/sh -c id" }, nil)
			}},
		{name: "snapshot folder that climbs", want: "--snapshot-dir",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Etcd.SnapshotDir = "/var/lib/data/../.." }, nil)
			}},
		{name: "deployment with a line break", want: "not a valid Deployment name",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Deployments = []string{"kube-apiserver\nforged"} }, nil)
			}},
		{name: "replicas of a Deployment the run does not scale", want: "recorded replicas of Deployment",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) { o.Replicas["etcd"] = 3 })
			}},
		{name: "replicas out of range", want: "out of range",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) { o.Replicas["kube-apiserver"] = 5000 })
			}},
		{name: "control plane namespace of another cluster", want: "recorded hcpNamespace",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) { o.HCPNamespace = "kube-system" })
			}},
		{name: "object key outside the prefix", want: "recorded objectKey",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) { o.Attempt.ObjectKey = "elsewhere/snapshot.db" })
			}},
		{name: "etcd shard with its own attempt", run: func(t *testing.T) *checkpoint.Run {
			return midRun(t, nil, func(o *steps.Outputs, _ string) { o.Shards = []steps.ShardRun{shardRun(o, "events")} })
		}},
		{name: "etcd shard in another pod", want: `recorded etcd shard "events in pod kube-apiserver-0"`,
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) {
					sh := shardRun(o, "events")
					sh.Pod = "kube-apiserver-0"
					o.Shards = []steps.ShardRun{sh}
				})
			}},
		{name: "etcd shard object outside its folder", want: "etcd shard events: recorded objectKey",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) {
					sh := shardRun(o, "events")
					// The default member's object, which the shard's upload would overwrite.
					sh.Attempt.ObjectKey = path.Join("backups", "example", o.Timestamp, manifest.SnapshotObject)
					o.Shards = []steps.ShardRun{sh}
				})
			}},
		{name: "etcd shard named twice", want: "recorded etcd shard",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) {
					o.Shards = []steps.ShardRun{shardRun(o, "events"), shardRun(o, "events")}
				})
			}},
		{name: "recorded preflight skipped", want: "preflight always runs",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.SkipSteps = []string{steps.StepPreflight} }, nil)
			}},
		{name: "an option this hcpsnap does not know", want: "recorded options are not readable",
			run: func(t *testing.T) *checkpoint.Run {
				r := midRun(t, nil, nil)
				r.Options = json.RawMessage(strings.Replace(string(r.Options), "{", `{"RunAsRoot":true,`, 1))
				return r
			}},
		{name: "no options", want: "recorded options are not readable",
			run: func(t *testing.T) *checkpoint.Run { r := midRun(t, nil, nil); r.Options = nil; return r }},
		{name: "options of another cluster", want: "records options of cluster",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Cluster = "other" }, nil)
			}},
		{name: "steps of another workflow", want: "records step",
			run: func(t *testing.T) *checkpoint.Run {
				r := midRun(t, nil, nil)
				r.Steps[1].Name, r.Steps[2].Name = r.Steps[2].Name, r.Steps[1].Name
				return r
			}},
		{name: "run of another cluster", want: "belongs to cluster",
			run: func(t *testing.T) *checkpoint.Run { r := midRun(t, nil, nil); r.Cluster.Name = "other"; return r }},
		{name: "key file named by the annotation alone", want: "pass --key-out FILE",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.KeyOut = "/root/.ssh/authorized_keys" }, nil)
			}},
		{name: "key file named by the annotation and by --key-out", keyOut: keyFile,
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.KeyOut = "/root/.ssh/authorized_keys" }, nil)
			},
			check: func(t *testing.T, r *recordedRun) {
				if r.opts.KeyOut != keyFile {
					t.Errorf("key file %q, want the flag's %q", r.opts.KeyOut, keyFile)
				}
			}},
		{name: "key file named by this machine's run file", trusted: true,
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.KeyOut = keyFile }, nil)
			},
			check: func(t *testing.T, r *recordedRun) {
				if r.opts.KeyOut != keyFile {
					t.Errorf("key file %q, want the run file's %q", r.opts.KeyOut, keyFile)
				}
			}},
		{name: "etcdctl of the annotation alone", want: `records --etcdctl "/usr/local/bin/etcdctl" where this machine has "/usr/bin/etcdctl"`,
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Etcd.Etcdctl = "/usr/local/bin/etcdctl" }, nil)
			}},
		{name: "etcdctl of the annotation confirmed by the flag", here: func(o *steps.Options) { o.Etcd.Etcdctl = "/usr/local/bin/etcdctl" },
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Etcd.Etcdctl = "/usr/local/bin/etcdctl" }, nil)
			}},
		{name: "etcdctl of this machine's run file", trusted: true,
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Etcd.Etcdctl = "/usr/local/bin/etcdctl" }, nil)
			}},
		{name: "Deployments of the annotation alone", want: "records --deployments",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Deployments = []string{"kube-apiserver", "ingress-operator"} },
					func(o *steps.Outputs, _ string) { o.Replicas = map[string]int32{"ingress-operator": 2} })
			}},
		{name: "snapshot folder of the annotation alone", want: "records --snapshot-dir",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, func(o *steps.Options) { o.Etcd.SnapshotDir = "/var/lib" },
					func(o *steps.Outputs, id string) { o.Attempt.Path = steps.SnapshotPath("/var/lib", id) })
			}},
		{name: "key file asked of a run that saves to the bucket", keyOut: keyFile, want: "which saves its key bundle to the bucket",
			run: func(t *testing.T) *checkpoint.Run { return midRun(t, nil, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := tt.run(t)
			var trusted *checkpoint.Run
			if tt.trusted {
				trusted = run
			}
			here := recordedOptions()
			if tt.here != nil {
				tt.here(&here)
			}
			here.KeyOut = tt.keyOut
			got, err := checkRecorded(annotated(t, run), trusted, testCluster, here)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if want := steps.SnapshotPath(steps.DefaultSnapshotDir, run.RunID); got.out.Attempt.Path != want {
					t.Errorf("snapshot path %q, want the derived %q", got.out.Attempt.Path, want)
				}
				if tt.check != nil {
					tt.check(t, got)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error containing %q", tt.want)
			}
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tt.want) || strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error (exit %d) %q, want one usage line containing %q", exitcode.Of(err), err, tt.want)
			}
		})
	}
}

// shardRun is a shard's record beside the run's own attempt o.Attempt: the
// same file path in the shard's own pod, its own object.
func shardRun(o *steps.Outputs, name string) steps.ShardRun {
	a := *o.Attempt
	if a.ObjectKey != "" {
		a.ObjectKey = path.Join(path.Dir(a.ObjectKey), manifest.ShardSnapshotObject(name))
	}
	return steps.ShardRun{Shard: manifest.Shard{Name: name, Resources: []manifest.ShardResource{{Resource: name}}}, Pod: steps.ShardPod(name), Attempt: &a}
}

func TestCheckFlagsAgree(t *testing.T) {
	rec := recordedOptions()
	tests := []struct {
		name string
		set  map[string]bool
		edit func(*steps.Options)
		want string
	}{
		{name: "no flags set", edit: func(o *steps.Options) { o.Bucket = "other-bucket"; o.Online = true }},
		{name: "a flag that agrees", set: map[string]bool{FlagBucket: true, FlagPrefix: true}},
		{name: "another bucket", set: map[string]bool{FlagBucket: true}, edit: func(o *steps.Options) { o.Bucket = "other-bucket" },
			want: `--bucket "other-bucket" contradicts run R, which recorded "hcpsnap-backups"`},
		{name: "online asked of an offline run", set: map[string]bool{FlagOnline: true}, edit: func(o *steps.Options) { o.Online = true },
			want: `--online "true" contradicts run R, which recorded "false"`},
		{name: "other deployments", set: map[string]bool{FlagDeployments: true}, edit: func(o *steps.Options) { o.Deployments = []string{"kube-apiserver"} },
			want: `--deployments "kube-apiserver" contradicts`},
		{name: "a shorter pause", set: map[string]bool{FlagPauseTimeout: true}, edit: func(o *steps.Options) { o.PauseTimeout = 10 * time.Minute },
			want: `--pause-timeout "10m0s" contradicts run R, which recorded "30m0s"`},
		{name: "a default that is not set", set: map[string]bool{FlagSnapshotDir: false}, edit: func(o *steps.Options) { o.Etcd.SnapshotDir = "/tmp" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			given := recordedOptions()
			if tt.edit != nil {
				tt.edit(&given)
			}
			err := checkFlagsAgree(given, rec, func(f string) bool { return tt.set[f] }, "R")
			if tt.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tt.want != "" && (exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("error %v, want a usage error containing %q", err, tt.want)
			}
		})
	}
}

func TestFindRun(t *testing.T) {
	held := midRun(t, nil, nil)
	newer := *held
	newer.Serial = held.Serial + 3
	other := midRun(t, nil, nil)
	tests := []struct {
		name       string
		held       *checkpoint.Run
		files      []*checkpoint.Run
		wantSerial int64
		wantLocal  bool
		wantCode   exitcode.Code
	}{
		{name: "annotation only", held: held, wantSerial: held.Serial},
		{name: "annotation and an older run file", held: &newer, files: []*checkpoint.Run{held}, wantSerial: newer.Serial, wantLocal: true},
		{name: "annotation and a newer run file", held: held, files: []*checkpoint.Run{&newer}, wantSerial: newer.Serial, wantLocal: true},
		{name: "run file only", files: []*checkpoint.Run{other}, wantSerial: other.Serial, wantLocal: true},
		{name: "nothing", wantCode: exitcode.Precondition},
		{name: "annotation of another cluster", held: func() *checkpoint.Run { r := *held; r.Cluster.Name = "x"; return &r }(), wantCode: exitcode.Usage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, r := range tt.files {
				if err := checkpoint.WriteFile(dir, r); err != nil {
					t.Fatal(err)
				}
			}
			run, local, _, err := findRun(dir, tt.held, testCluster)
			if tt.wantCode != 0 {
				if exitcode.Of(err) != tt.wantCode {
					t.Fatalf("error %v (exit %d), want exit %d", err, exitcode.Of(err), tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if run.Serial != tt.wantSerial || (local != nil) != tt.wantLocal {
				t.Fatalf("run serial %d, local %v; want serial %d, local %v", run.Serial, local != nil, tt.wantSerial, tt.wantLocal)
			}
		})
	}
	// A run ended on this machine that still holds the cluster is not resumed.
	dir := t.TempDir()
	ended := *held
	ended.Abandoned = true
	if err := checkpoint.WriteFile(dir, &ended); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := findRun(dir, held, testCluster); exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "--abandon") {
		t.Fatalf("error %v, want a usage error pointing to --abandon", err)
	}
	if _, err := os.Stat(filepath.Join(dir, checkpoint.FileName(held))); err != nil {
		t.Fatal(err)
	}
}

// TestResumeNeedsOnlyTheCluster: --resume is valid with --cluster alone; it
// fails later, for want of a cluster, not for want of --bucket.
func TestResumeNeedsOnlyTheCluster(t *testing.T) {
	_, stderr, code := run(t, map[string]string{"KUBECONFIG": filepath.Join(t.TempDir(), "none"), "HCPSNAP_BUCKET": ""}, "backup", "--cluster", "example", "--resume")
	if code == exitcode.Usage || strings.Contains(stderr, "--bucket is required") {
		t.Fatalf("exit %d, stderr %q: --resume must not ask for --bucket", code, stderr)
	}
}

// TestResumeRefusesAContradictingFlag runs `backup --resume --bucket X`
// against a HostedCluster whose run recorded another bucket.
func TestResumeRefusesAContradictingFlag(t *testing.T) {
	r := midRun(t, nil, nil)
	data, _ := json.Marshal(r)
	annotation := string(data)
	for _, tt := range []struct {
		name, bucket string
		want         string
	}{
		{"another bucket", "other-bucket", `--bucket "other-bucket" contradicts run ` + r.RunID + `, which recorded "hcpsnap-backups"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newAbandonWorld(t, &annotation)
			o, _, _ := abandonOptions(w, t.TempDir(), "", false, func(o *BackupOptions) {
				o.Abandon, o.Resume = false, true
				o.Options = recordedOptions()
				o.S3 = S3Options{Bucket: tt.bucket, PartSizeMiB: 16, Concurrency: 4}
				o.UndoTimeout = time.Minute
				o.isSet = func(f string) bool { return f == FlagBucket }
			})
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			err := runAbandon(t, o)
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v (exit %d), want a usage error containing %q", err, exitcode.Of(err), tt.want)
			}
			if len(w.patches) != 0 {
				t.Fatalf("the HostedCluster was patched: %q", w.patches)
			}
		})
	}
}
