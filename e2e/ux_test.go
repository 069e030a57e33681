//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/steps"
)

// recordedRun is a run of the environment's cluster that died after
// scale-down-apiservers, as its annotation or run file holds it; edit
// changes its options or outputs before they are encoded.
func (e *testEnv) recordedRun(t *testing.T, edit func(opts, out map[string]any)) *checkpoint.Run {
	t.Helper()
	var names []string
	for _, st := range steps.Backup() {
		names = append(names, st.Name)
	}
	r := checkpoint.New("backup", checkpoint.Cluster{Namespace: e.namespace, Name: e.cluster}, "elsewhere", names, time.Now().Add(-time.Hour))
	for _, n := range []string{steps.StepPreflight, steps.StepPause, steps.StepScaleDown} {
		r.Step(n).Status = checkpoint.Done
	}
	opts := map[string]any{
		"Cluster": e.cluster, "Namespace": e.namespace, "Bucket": e.bucket, "Prefix": "ux", "KeyPrefix": "ux-keys",
		"Member": "etcd-0", "Container": "etcd", "Deployments": steps.DefaultDeployments,
		"PauseTimeout": int64(30 * time.Minute), "WaitTimeout": int64(5 * time.Minute),
		"Etcd": map[string]any{"Etcdctl": steps.DefaultEtcdctl, "Endpoint": steps.DefaultEndpoint, "Cert": steps.DefaultClientCert,
			"Key": steps.DefaultClientKey, "SnapshotDir": steps.DefaultSnapshotDir},
	}
	out := map[string]any{"hcpNamespace": e.hcpNamespace, "timestamp": "20260101T000000Z", "caCert": steps.CACertPath,
		"pausedUntil": map[string]any{"present": false}, "pauseDeadline": time.Now().Add(10 * time.Minute).UTC().Format(time.RFC3339),
		"replicas": map[string]int32{"kube-apiserver": 3, "openshift-apiserver": 3, "openshift-oauth-apiserver": 3}}
	if edit != nil {
		edit(opts, out)
	}
	r.Options, _ = json.Marshal(opts)
	r.Outputs, _ = json.Marshal(out)
	return r
}

// hold writes run as the HostedCluster's run annotation, as a run on
// another machine would have, and removes it when the test ends.
func (e *testEnv) hold(t *testing.T, run *checkpoint.Run) {
	t.Helper()
	ctx := context.Background()
	data, _ := json.Marshal(run)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{steps.RunAnnotation: string(data)}}})
	if _, err := e.hyper.PatchHostedCluster(ctx, e.namespace, e.cluster, patch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		undo, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{steps.RunAnnotation: nil}}})
		_, _ = e.hyper.PatchHostedCluster(ctx, e.namespace, e.cluster, undo)
	})
}

// writeRunFile writes r as this machine's run file in a new state folder.
func writeRunFile(t *testing.T, r *checkpoint.Run) string {
	t.Helper()
	dir := t.TempDir()
	if err := checkpoint.WriteFile(dir, r); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestResumeAndAbandonRefusals: refusals of --resume, --abandon and
// --skip-steps end with exit 2, one line, nothing on stdout and nothing
// changed in the cluster or the bucket.
func TestResumeAndAbandonRefusals(t *testing.T) {
	env := loadEnv(t)
	tests := []struct {
		name     string
		args     []string
		stateDir string
		annotate *checkpoint.Run // held on the HostedCluster during the case
		want     string
	}{
		{name: "skipping preflight", args: []string{"backup", "--skip-steps", "preflight"}, want: "preflight always runs"},
		{name: "skipping the clean-up", args: []string{"backup", "--skip-steps", "cleanup-pod-file"}, want: "snapshot file in the etcd pod"},
		{name: "abandon without a terminal", args: []string{"backup", "--abandon"}, want: "stdin is not a terminal"},
		// HCPSNAP_BUCKET is set in the environment: a flag's variable counts as setting it.
		{name: "resume with a contradicting bucket", args: []string{"backup", "--resume"},
			stateDir: writeRunFile(t, env.recordedRun(t, func(o, _ map[string]any) { o["Bucket"] = "recorded-bucket" })),
			want:     `--bucket "` + env.bucket + `" contradicts run`},
		{name: "resume with a contradicting flag", args: []string{"backup", "--resume", "--prefix", "elsewhere"},
			stateDir: writeRunFile(t, env.recordedRun(t, nil)), want: `--prefix "elsewhere" contradicts run`},
		{name: "resume of a run whose snapshot path was edited", args: []string{"backup", "--resume"},
			stateDir: writeRunFile(t, env.recordedRun(t, func(_, o map[string]any) {
				o["attempt"] = map[string]any{"id": "20260101T000000Z-0a1b2c3d-1", "path": "/var/lib/data/member"}
			})),
			want: "recorded attempt path"},
		{name: "resume of a run whose etcdctl was edited", args: []string{"backup", "--resume"},
			stateDir: writeRunFile(t, env.recordedRun(t, func(o, _ map[string]any) {
				o["Etcd"].(map[string]any)["Etcdctl"] = "/bin/sh -c id"
			})),
			want: "must be a clean absolute path"},
		{name: "resume of a run whose etcdctl only the annotation names", args: []string{"backup", "--resume"},
			annotate: env.recordedRun(t, func(o, _ map[string]any) { o["Etcd"].(map[string]any)["Etcdctl"] = "/opt/etcd/etcdctl" }),
			want:     `records --etcdctl "/opt/etcd/etcdctl" where this machine has "` + steps.DefaultEtcdctl + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.annotate != nil {
				env.hold(t, tt.annotate)
			}
			before := env.snapshotAll(t)
			stateDir := tt.stateDir
			if stateDir == "" {
				stateDir = t.TempDir()
			}
			r := env.startHcpsnap(t, stateDir, nil, tt.args...)
			if code := r.wait(t); exitcode.Code(code) != exitcode.Usage {
				t.Fatalf("exit %d, want 2\nstderr:\n%s", code, r.stderr.String())
			}
			last := lastLine(r.stderr.String())
			if !strings.HasPrefix(last, "hcpsnap: ") || !strings.Contains(last, tt.want) {
				t.Fatalf("last line %q: want one 'hcpsnap: ' line containing %q", last, tt.want)
			}
			if r.stdout.Len() != 0 {
				t.Fatalf("stdout not empty: %q", r.stdout.String())
			}
			if after := env.snapshotAll(t); after != before {
				t.Fatalf("the cluster or the bucket changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestAbandonReleasesTheLock: a run holds the real HostedCluster (its
// annotation written as a run writes it); --abandon --yes prints what it
// left and releases the lock with a patch the real API server accepts, and
// a new backup is no longer refused.
func TestAbandonReleasesTheLock(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	run := env.recordedRun(t, nil)
	env.hold(t, run)
	specBefore := func() string {
		hc, err := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := json.Marshal(hc.Spec)
		return string(s)
	}
	spec := specBefore()

	refused := env.hcpsnap(t, t.TempDir(), "backup", "--online", "--prefix", "ux-abandon")
	if refused.code != int(exitcode.Precondition) || !strings.Contains(refused.stderr, "--abandon") {
		t.Fatalf("backup while held: exit %d, stderr %s; want exit 3 naming --abandon", refused.code, refused.stderr)
	}
	dry := env.hcpsnap(t, t.TempDir(), "backup", "--abandon", "--dry-run")
	if dry.code != 0 || !strings.Contains(dry.stdout, "openshift-oauth-apiserver was 3, now scaled to 0 - not restored") {
		t.Fatalf("--abandon --dry-run: exit %d\nstdout %s\nstderr %s", dry.code, dry.stdout, dry.stderr)
	}
	res := env.hcpsnap(t, t.TempDir(), "backup", "--abandon", "--yes")
	if res.code != 0 || !strings.Contains(res.stdout, "oc scale deployment -n "+env.hcpNamespace+" openshift-oauth-apiserver --replicas=3") ||
		!strings.Contains(res.stdout, "is released from run "+run.RunID) {
		t.Fatalf("--abandon --yes: exit %d\nstdout %s\nstderr %s", res.code, res.stdout, res.stderr)
	}
	hc, err := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if _, held := hc.Annotations[steps.RunAnnotation]; held {
		t.Fatal("the annotation is still there")
	}
	if got := specBefore(); got != spec {
		t.Fatalf("the spec changed:\nbefore %s\nafter  %s", spec, got)
	}
	again := env.hcpsnap(t, t.TempDir(), "backup", "--abandon", "--yes")
	if again.code != int(exitcode.Precondition) || !strings.Contains(again.stderr, "nothing to release") {
		t.Fatalf("second --abandon: exit %d, stderr %s", again.code, again.stderr)
	}
}

// TestBackupsSkipAnUnreadableManifest: beside a good backup, a damaged
// manifest is named in a warning, and both `backups` and `restore --latest`
// go on with the good one.
func TestBackupsSkipAnUnreadableManifest(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--online", "--prefix", "ux-unreadable")
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	bad := "ux-unreadable/" + env.cluster + "/29990101T000000Z/manifest.json"
	client := env.s3Client(env.vars["AWS_SECRET_ACCESS_KEY"])
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(bad), Body: bytes.NewReader([]byte(`{"schemaVersion":1,"snap`))}); err != nil {
		t.Fatal(err)
	}
	list := env.hcpsnap(t, t.TempDir(), "backups", "--prefix", "ux-unreadable")
	if list.code != 0 || strings.Count(list.stdout, "manifest.json") != 1 || !strings.Contains(list.stderr, bad) {
		t.Fatalf("backups: exit %d\nstdout %s\nstderr %s", list.code, list.stdout, list.stderr)
	}
	render, err := os.ReadFile(renderFile)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "cluster.yaml")
	rf := filepath.Join(t.TempDir(), "render.yaml")
	if err := os.WriteFile(rf, render, 0o600); err != nil {
		t.Fatal(err)
	}
	latest := env.hcpsnap(t, t.TempDir(), "restore", "--latest", "--prefix", "ux-unreadable", "-f", rf, "--out", out)
	if latest.code != 0 || !strings.Contains(latest.stderr, bad) {
		t.Fatalf("restore --latest: exit %d\nstderr %s", latest.code, latest.stderr)
	}
}
