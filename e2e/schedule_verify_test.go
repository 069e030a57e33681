//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// TestScheduleVerifyRunsForReal takes a backup of the hosted cluster,
// applies `schedule verify` for it with the image `make image` built, starts
// a Job from the CronJob as `kubectl create job --from` does, and checks
// that the pod's drill, with no API token and no RBAC, restored the backup
// and decrypted its Secrets. A second schedule drills a cluster with no
// backup: its Job fails, and `schedule --list` shows both results. --delete
// removes every object of both.
func TestScheduleVerifyRunsForReal(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	ctx := context.Background()
	env.deleteHcpsnapObjects(t)
	t.Cleanup(func() { env.deleteHcpsnapObjects(t) })
	env.createS3Secret(t, env.namespace)
	prefix := uniquePrefix("scheduled-drill")

	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--online", "--prefix", prefix, "--key-prefix", "e2e-drill-keys")
	if res.code != 0 {
		t.Fatalf("backup: exit %d\n%s", res.code, res.stderr)
	}
	manifestURL := lastSummary(t, res.stdout).Manifest

	scheduleArgs := func(cluster string, extra ...string) []string {
		return append([]string{"schedule", "verify", "--cluster", cluster, "--schedule", "0 3 1 1 *", "--job-namespace", env.namespace,
			"--image", image, "--s3-credentials-secret", scheduleSecret, "--s3-endpoint", env.vars["AWS_ENDPOINT_URL_S3"],
			"--region", env.vars["AWS_REGION"], "--prefix", prefix}, extra...)
	}
	name := schedule.DefaultVerifyName(env.cluster)
	if res := env.hcpsnap(t, t.TempDir(), scheduleArgs(env.cluster, "--dry-run=server")...); res.code != 0 {
		t.Fatalf("schedule verify --dry-run=server: exit %d: %s", res.code, res.stderr)
	}
	if objs := env.hcpsnapObjects(t); len(objs) != 0 {
		t.Fatalf("a server-side dry run left %q", objs)
	}
	if res := env.hcpsnap(t, t.TempDir(), scheduleArgs(env.cluster, "--apply")...); res.code != 0 {
		t.Fatalf("schedule verify --apply: exit %d: %s", res.code, res.stderr)
	}
	// A ServiceAccount and the CronJob; no role, no binding.
	want := []string{"CronJob/" + env.namespace + "/" + name, "ServiceAccount/" + env.namespace + "/" + name}
	if got := env.hcpsnapObjects(t); !slices.Equal(got, want) {
		t.Fatalf("objects %q, want %q", got, want)
	}

	job := name + "-1"
	if result := env.runCronJob(t, name, job); result != schedule.ResultComplete {
		t.Fatalf("Job %s ended %q, want Complete; its pods:\n%s", job, result, env.podReport(t, job))
	}
	pods, err := env.kube.CoreV1().Pods(env.namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of Job %s: %d, %v", job, len(pods.Items), err)
	}
	pod := pods.Items[0]
	if pod.Spec.ServiceAccountName != name || pod.Spec.Containers[0].Image != image {
		t.Errorf("pod ran as %s with image %s", pod.Spec.ServiceAccountName, pod.Spec.Containers[0].Image)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool { return s.ServiceAccountToken != nil }) {
			t.Errorf("the drill's pod mounts a ServiceAccount token (volume %s)", v.Name)
		}
	}
	logs, events := env.jobEvents(t, ctx, pod.Name)
	if strings.Contains(logs, base64.StdEncoding.EncodeToString(fixture.EncryptionKey(env.FixtureConfig()))) {
		t.Error("the job's output holds the AES key")
	}
	var drilled *drillLine
	var sawScratch bool
	for _, ev := range events {
		if ev.fields["message_type"] == "drill_plan" {
			sawScratch = ev.fields["scratchDir"] == schedule.ScratchDir
		}
		if ev.fields["message_type"] == "verify" {
			var line drillLine
			if err := json.Unmarshal([]byte(ev.line), &line); err != nil {
				t.Fatal(err)
			}
			drilled = &line
		}
	}
	if !sawScratch {
		t.Errorf("no drill plan in %s:\n%s", schedule.ScratchDir, logs)
	}
	if drilled == nil || !drilled.OK || drilled.Result == nil {
		t.Fatalf("no successful drill in the job's output:\n%s", logs)
	}
	n := len(fixture.StoredKeys()["secrets"])
	if s := drilled.Result.Contents.Secrets; s.AESCBC != n || s.Decrypted != n {
		t.Errorf("secrets %+v, want %d of %d decrypted", s, n, n)
	}
	if m := env.readManifest(t, manifestURL); drilled.Result.Revision != m.Etcd.Revision+1_000_000_000 {
		t.Errorf("drilled revision %d, want the manifest's %d + 1e9", drilled.Result.Revision, m.Etcd.Revision)
	}
	if !strings.HasPrefix(drilled.Result.ClientURL, "http://127.0.0.1:") {
		t.Errorf("the embedded etcd served on %s, not loopback", drilled.Result.ClientURL)
	}
	t.Logf("the scheduled drill of %s: revision %d, %d keys, %d of %d Secrets decrypted, etcd on %s", manifestURL,
		drilled.Result.Revision, drilled.Result.Contents.Keys, drilled.Result.Contents.Secrets.Decrypted, n, drilled.Result.ClientURL)

	// A cluster without a backup under the prefix: the drill exits 3 and
	// its Job fails.
	const missing = "no-backup"
	if res := env.hcpsnap(t, t.TempDir(), scheduleArgs(missing, "--apply")...); res.code != 0 {
		t.Fatalf("schedule verify --cluster %s --apply: exit %d: %s", missing, res.code, res.stderr)
	}
	failedName := schedule.DefaultVerifyName(missing)
	failedJob := failedName + "-1"
	if result := env.runCronJob(t, failedName, failedJob); result != schedule.ResultFailed {
		t.Fatalf("Job %s ended %q, want Failed; its pods:\n%s", failedJob, result, env.podReport(t, failedJob))
	}
	report := env.podReport(t, failedJob)
	if !strings.Contains(report, "no readable backup of cluster "+missing) {
		t.Errorf("the failed drill does not say why:\n%s", report)
	}
	failedPods, err := env.kube.CoreV1().Pods(env.namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + failedJob})
	if err != nil || len(failedPods.Items) != 1 {
		t.Fatalf("pods of Job %s: %v", failedJob, err)
	}
	if cs := failedPods.Items[0].Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Terminated == nil || cs[0].State.Terminated.ExitCode != 3 {
		t.Errorf("the failed drill's container: %+v, want exit 3 (no backup)", cs)
	}
	t.Logf("the drill of a cluster without a backup failed its Job:\n%s", report)

	res = env.hcpsnap(t, t.TempDir(), "-o", "json", "schedule", "--list", "--job-namespace", env.namespace)
	results := map[string]schedule.Status{}
	for _, l := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		var st schedule.Status
		if err := json.Unmarshal([]byte(l), &st); err != nil {
			t.Fatalf("--list line %q: %v\n%s", l, err, res.stderr)
		}
		results[st.Name] = st
	}
	if st := results[name]; st.LastResult != schedule.ResultComplete || st.LastJob != job || st.Target != "verify "+env.cluster {
		t.Errorf("--list of %s: %+v", name, st)
	}
	if st := results[failedName]; st.LastResult != schedule.ResultFailed || st.LastJob != failedJob || st.Target != "verify "+missing {
		t.Errorf("--list of %s: %+v", failedName, st)
	}

	for _, c := range []string{env.cluster, missing} {
		del := []string{"schedule", "verify", "--cluster", c, "--job-namespace", env.namespace, "--delete"}
		if res := env.hcpsnap(t, t.TempDir(), del...); res.code != 0 {
			t.Fatalf("schedule verify --cluster %s --delete: exit %d: %s", c, res.code, res.stderr)
		}
	}
	if objs := env.hcpsnapObjects(t); len(objs) != 0 {
		t.Errorf("left after --delete: %q", objs)
	}
}

// runCronJob starts Job job from CronJob cronJob in the environment's
// namespace, as `kubectl create job --from=cronjob/...` does, and returns
// how it ended ("" when it did not end within five minutes).
func (e *testEnv) runCronJob(t *testing.T, cronJob, job string) schedule.Result {
	t.Helper()
	kubectl := filepath.Join(e.vars["LOCALENV_BIN_DIR"], "kubectl")
	cmd := exec.Command(kubectl, "create", "job", job, "--from=cronjob/"+cronJob, "-n", e.namespace)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.vars["KUBECONFIG"])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl create job --from: %v: %s", err, out)
	}
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		j, err := e.kube.BatchV1().Jobs(e.namespace).Get(context.Background(), job, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range j.Status.Conditions {
			if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
				return schedule.Result(c.Type)
			}
		}
	}
	return ""
}
