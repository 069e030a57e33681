package command

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/hcpsnap/hcpsnap/deploy"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/schedule"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var scheduleBase = []string{"schedule", "--cluster", "example", "--schedule", "0 2 * * *", "--image", "quay.io/acme/hcpsnap@" + testDigest,
	"--bucket", "backups", "--s3-credentials-secret", "hcpsnap-s3"}

// clearHCPSNAPEnv unsets the HCPSNAP_ variables of the machine running the
// tests (an e2e shell sets several), so that they set no flag here.
func clearHCPSNAPEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "HCPSNAP_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// renderedCronJob runs schedule with args and returns the rendered
// objects' CronJob.
func renderedCronJob(t *testing.T, env map[string]string, args ...string) *batchv1.CronJob {
	t.Helper()
	clearHCPSNAPEnv(t)
	stdout, stderr, code := run(t, env, args...)
	if code != exitcode.OK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	docs := strings.Split(stdout, "\n---\n")
	var cj batchv1.CronJob
	if err := yaml.UnmarshalStrict([]byte(docs[len(docs)-1]), &cj); err != nil {
		t.Fatalf("last document is not a CronJob: %v\n%s", err, stdout)
	}
	return &cj
}

func jobArgs(cj *batchv1.CronJob) []string {
	return cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args
}

// TestSchedulePassesBackupOptionsThrough checks that every backup option
// given to schedule, on the command line or in its HCPSNAP_ variable,
// reaches the job's `hcpsnap backup`, in backup's order and after the
// target, and that options left unset stay unset.
func TestSchedulePassesBackupOptionsThrough(t *testing.T) {
	cj := renderedCronJob(t, map[string]string{"HCPSNAP_PREFIX": "nightly", "HCPSNAP_STATE_DIR": "/home/me/state", "HCPSNAP_KEY_OUT": "/home/me/key"},
		append(slices.Clone(scheduleBase), "--namespace", "hosted", "--online", "--via", "stream", "--pause-timeout", "10m",
			"--deployments", "kube-apiserver,openshift-apiserver", "--skip-steps", "save-encryption-key", "--s3-path-style", "--part-size-mib", "16",
			"--snapshot-retries", "0")...)
	want := []string{"--log-format=json", "--output=json", "backup",
		"--cluster=example", "--namespace=hosted",
		"--prefix=nightly", "--deployments=kube-apiserver,openshift-apiserver", "--pause-timeout=10m0s", "--online=true",
		"--via=stream", "--snapshot-retries=0", "--skip-steps=save-encryption-key", "--bucket=backups", "--s3-path-style=true", "--part-size-mib=16"}
	if got := jobArgs(cj); !slices.Equal(got, want) {
		t.Fatalf("job args\n got %q\nwant %q", got, want)
	}
}

// TestSchedulePassesPruneThrough checks that the retention options of
// `backup --prune` reach the job like any other backup option.
func TestSchedulePassesPruneThrough(t *testing.T) {
	cj := renderedCronJob(t, nil, append(slices.Clone(scheduleBase), "--prune", "--keep-daily", "7", "--keep-within", "48h")...)
	args := jobArgs(cj)
	for _, want := range []string{"--prune=true", "--keep-daily=7", "--keep-within=48h"} {
		if !slices.Contains(args, want) {
			t.Errorf("job args %q lack %s", args, want)
		}
	}
}

// TestSchedulePassThroughReparses parses the job's arguments with the real
// backup command and checks they mean what was given to schedule.
func TestSchedulePassThroughReparses(t *testing.T) {
	cj := renderedCronJob(t, nil, append(slices.Clone(scheduleBase), "--online", "--pause-timeout", "10m",
		"--deployments", "kube-apiserver", "--concurrency", "3", "--key-prefix", "keys/x")...)
	var got *BackupOptions
	cmd := newBackupCommand(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	o := &BackupOptions{}
	cmd.Flags = o.flags()
	cmd.Action = func(context.Context, *cli.Command) error { got = o; return nil }
	args := jobArgs(cj)
	if err := cmd.Run(context.Background(), append([]string{"backup"}, args[slices.Index(args, "backup")+1:]...)); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Cluster != "example" || got.Namespace != "clusters" || !got.Online || got.PauseTimeout != 10*time.Minute ||
		!slices.Equal(got.Deployments, []string{"kube-apiserver"}) || got.S3.Concurrency != 3 || got.KeyPrefix != "keys/x" || got.S3.Bucket != "backups" {
		t.Fatalf("backup parsed the job's arguments as %+v", got)
	}
}

// TestScheduleFlagsCoverBackup fails when a backup flag is neither passed
// through, nor excluded with a reason, nor one of the target flags — and
// when a pass-through flag's type cannot be written as an argument. It
// keeps flags added to backup later (retention, fleets) from being lost.
func TestScheduleFlagsCoverBackup(t *testing.T) {
	o := &ScheduleOptions{}
	_ = o.flags()
	checkPassThrough(t, "backup", (&BackupOptions{}).flags, o.passThrough, scheduleExcluded)
}

func TestScheduleBadInput(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		replace map[string]string
		want    string
	}{
		{name: "invalid cron", replace: map[string]string{"0 2 * * *": "0 2 * *"}, want: "--schedule \"0 2 * *\" is not a valid cron schedule"},
		{name: "cron out of range", replace: map[string]string{"0 2 * * *": "0 24 * * *"}, want: "is not a valid cron schedule"},
		{name: "time zone in the cron", replace: map[string]string{"0 2 * * *": "CRON_TZ=Europe/Paris 0 2 * * *"}, want: "pass --time-zone instead"},
		{name: "unknown time zone", args: []string{"--time-zone", "Europe/Pariss"}, want: "--time-zone \"Europe/Pariss\""},
		{name: "Local time zone", args: []string{"--time-zone", "Local"}, want: "--time-zone \"Local\""},
		{name: "tag", replace: map[string]string{"quay.io/acme/hcpsnap@" + testDigest: "quay.io/acme/hcpsnap:v1"}, want: "pin it by digest"},
		{name: "no image", replace: map[string]string{"--image": "--online", "quay.io/acme/hcpsnap@" + testDigest: "--via=exec"}, want: "--image is required"},
		{name: "no credentials", replace: map[string]string{"--s3-credentials-secret": "--prefix"}, want: "no S3 credentials"},
		{name: "two credentials", args: []string{"--role-arn", "arn:aws:iam::1:role/x"}, want: "two sources of S3 credentials"},
		{name: "role not an ARN", replace: map[string]string{"--s3-credentials-secret": "--role-arn"}, want: "is not an ARN"},
		{name: "no schedule", replace: map[string]string{"--schedule": "--prefix", "0 2 * * *": "p"}, want: "--schedule is required"},
		{name: "no cluster", replace: map[string]string{"--cluster": "--prefix"}, want: "no clusters named"},
		{name: "a name is no cluster", replace: map[string]string{"--cluster": "--name"}, want: "no clusters named"},
		{name: "cluster and selector", args: []string{"--selector", "a=b"}, want: "keep one"},
		{name: "bad selector", replace: map[string]string{"--cluster": "--selector", "example": "a b c"}, want: "is not a label selector"},
		{name: "all namespaces without a job namespace", replace: map[string]string{"--cluster": "--all-namespaces", "example": "--online"}, want: "--all-namespaces needs --job-namespace"},
		{name: "bad name", args: []string{"--name", "Nightly_Backup"}, want: "--name \"Nightly_Backup\" is not a schedule name"},
		{name: "long name", args: []string{"--name", strings.Repeat("a", 53)}, want: "is not a schedule name"},
		{name: "short starting deadline", args: []string{"--starting-deadline", "5s"}, want: "--starting-deadline 5s is too short"},
		{name: "history", args: []string{"--failed-jobs-history-limit", "-1"}, want: "out of range"},
		{name: "backup's own rules", args: []string{"--part-size-mib", "1"}, want: "--part-size-mib 1 is out of range"},
		{name: "backup's bucket rules", replace: map[string]string{"backups": "B"}, want: "--bucket \"B\""},
		{name: "unknown step", args: []string{"--skip-steps", "nap"}, want: "nap"},
		{name: "prune without a policy", args: []string{"--prune"}, want: "retention policy is empty"},
		{name: "excluded --resume", args: []string{"--resume"}, want: "flag provided but not defined"},
		{name: "excluded --key-out", args: []string{"--key-out", "k"}, want: "flag provided but not defined"},
		{name: "excluded --state-dir", args: []string{"--state-dir", "d"}, want: "flag provided but not defined"},
		{name: "excluded --s3-ca-bundle", args: []string{"--s3-ca-bundle", "ca.pem"}, want: "flag provided but not defined"},
		{name: "dry run mode", args: []string{"--dry-run=all"}, want: "--dry-run=all is not a mode"},
		{name: "apply and list", args: []string{"--apply", "--list"}, want: "choose one"},
		{name: "apply and client dry run", args: []string{"--apply", "--dry-run=client"}, want: "contradict"},
		{name: "markdown", args: []string{"-o", "markdown"}, want: "markdown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearHCPSNAPEnv(t)
			args := slices.Clone(scheduleBase)
			for i, a := range args {
				if r, ok := tt.replace[a]; ok {
					args[i] = r
				}
			}
			args = append(args, tt.args...)
			if tt.name == "markdown" {
				args = append([]string{"-o", "markdown"}, args[:len(args)-2]...)
			}
			stdout, err := runErr(t, args...)
			stderr, code := fmt.Sprint(err), exitcode.Of(err)
			if code != exitcode.Usage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitcode.Usage, stderr)
			}
			if stdout != "" {
				t.Errorf("wrote to stdout: %q", stdout)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("error is not one line: %q", stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.want)
			}
		})
	}
}

func TestScheduleRenderJSON(t *testing.T) {
	clearHCPSNAPEnv(t)
	stdout, stderr, code := run(t, nil, append([]string{"-o", "json"}, scheduleBase...)...)
	if code != exitcode.OK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		kinds = append(kinds, m["kind"].(string))
	}
	if want := []string{"ClusterRole", "ServiceAccount", "RoleBinding", "RoleBinding", "CronJob"}; !slices.Equal(kinds, want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}
}

// scheduleOptions returns validated options of args for a test that runs
// them on fakes.
func scheduleOptions(t *testing.T, kubeObjs []runtime.Object, hostedClusters []runtime.Object, args ...string) (*ScheduleOptions, *fake.Clientset, *bytes.Buffer) {
	t.Helper()
	clearHCPSNAPEnv(t)
	var out bytes.Buffer
	captured := &ScheduleOptions{Out: &out}
	root := New(strings.NewReader(""), &out, &bytes.Buffer{})
	for i, c := range root.Commands {
		if c.Name == "schedule" {
			// Stop after Validate, with the options the command line built.
			root.Commands[i] = captured.command(func(ctx context.Context, _ *cli.Command) error {
				captured.Global = globalsFrom(ctx)
				return captured.Validate()
			})
		}
	}
	if err := root.Run(context.Background(), append([]string{"hcpsnap"}, args...)); err != nil {
		t.Fatalf("validate %v: %v", args, err)
	}
	cs := fake.NewClientset(kubeObjs...)
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{kube.HostedClusterGVR: "HostedClusterList"}, hostedClusters...)
	captured.kube, captured.dyn = cs, dyn
	captured.now = func() time.Time { return time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC) }
	return captured, cs, &out
}

// fakeHostedCluster is a HostedCluster for the fake dynamic client.
func fakeHostedCluster(ns, name string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("hypershift.openshift.io/v1beta1")
	u.SetKind("HostedCluster")
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(labels)
	return u
}

func namespaces(names ...string) []runtime.Object {
	var objs []runtime.Object
	for _, n := range names {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return objs
}

func s3Secret(ns string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hcpsnap-s3"},
		Data: map[string][]byte{"AWS_ACCESS_KEY_ID": []byte("id"), "AWS_SECRET_ACCESS_KEY": []byte("secret")}}
}

func kubeWrites(cs *fake.Clientset) []string {
	var w []string
	for _, a := range cs.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			w = append(w, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return w
}

func TestScheduleApplyPreconditions(t *testing.T) {
	ready := append(namespaces("clusters", "clusters-example"), s3Secret("clusters"))
	hc := []runtime.Object{fakeHostedCluster("clusters", "example", map[string]string{"backup": "nightly"})}
	tests := []struct {
		name     string
		kubeObjs []runtime.Object
		hcs      []runtime.Object
		args     []string
		want     string
	}{
		{name: "no HostedCluster", kubeObjs: ready, want: "HostedCluster clusters/example not found"},
		{name: "no job namespace", kubeObjs: ready, hcs: hc, args: []string{"--job-namespace", "hcpsnap"}, want: "namespace hcpsnap does not exist"},
		{name: "no control plane namespace", kubeObjs: append(namespaces("clusters"), s3Secret("clusters")), hcs: hc, want: "namespace clusters-example does not exist"},
		{name: "no Secret", kubeObjs: namespaces("clusters", "clusters-example"), hcs: hc, want: "no such Secret in namespace clusters"},
		{name: "Secret without the keys", hcs: hc,
			kubeObjs: append(namespaces("clusters", "clusters-example"), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: "hcpsnap-s3"}, Data: map[string][]byte{"access": []byte("x")}}),
			want:     "has no key AWS_ACCESS_KEY_ID"},
		{name: "no CA ConfigMap", kubeObjs: ready, hcs: hc, args: []string{"--s3-ca-configmap", "s3-ca"}, want: "no such ConfigMap"},
		{name: "selector matching nothing", kubeObjs: ready, hcs: hc, args: []string{"--selector", "backup=weekly"}, want: "matches no HostedCluster in namespace clusters"},
		{name: "a stranger's CronJob", kubeObjs: append(slices.Clone(ready), &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: "hcpsnap-clusters-example"}}),
			hcs: hc, want: "not managed by this schedule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := slices.Clone(scheduleBase)
			if slices.Contains(tt.args, "--selector") {
				args = slices.Delete(args, 1, 3)
			}
			args = append(append(args, tt.args...), "--apply")
			o, cs, out := scheduleOptions(t, tt.kubeObjs, tt.hcs, args...)
			err := o.Run(context.Background())
			if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Run = %v (exit %d), want one line with %q and exit 3", err, exitcode.Of(err), tt.want)
			}
			if w := kubeWrites(cs); len(w) > 0 {
				t.Errorf("wrote %v before refusing", w)
			}
			if out.Len() > 0 {
				t.Errorf("stdout %q", out.String())
			}
		})
	}
}

func TestScheduleApplyAndDryRun(t *testing.T) {
	objs := append(namespaces("clusters", "clusters-example"), s3Secret("clusters"))
	hc := []runtime.Object{fakeHostedCluster("clusters", "example", nil)}

	o, cs, out := scheduleOptions(t, objs, hc, append(slices.Clone(scheduleBase), "--dry-run=server")...)
	var dryRuns int
	cs.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if slices.Equal(a.(k8stesting.PatchActionImpl).PatchOptions.DryRun, []string{metav1.DryRunAll}) {
			dryRuns++
		}
		return true, nil, nil
	})
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dryRuns != 5 || !strings.Contains(out.String(), "nothing was persisted") {
		t.Errorf("%d dry-run patches; output %q", dryRuns, out.String())
	}

	o, cs, out = scheduleOptions(t, objs, hc, append(slices.Clone(scheduleBase), "--apply")...)
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	cj, err := cs.BatchV1().CronJobs("clusters").Get(context.Background(), "hcpsnap-clusters-example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !schedule.OwnedBy(cj.Labels, "clusters", "hcpsnap-clusters-example") {
		t.Errorf("labels %v", cj.Labels)
	}
	if !strings.Contains(out.String(), "next run 2026-01-16T02:00:00Z") {
		t.Errorf("output %q does not give the next run", out.String())
	}
}

func TestScheduleList(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	last := metav1.NewTime(now.Add(-10 * time.Hour))
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: "hcpsnap-clusters-example", UID: "u1",
			Labels:      schedule.Labels("clusters", "hcpsnap-clusters-example"),
			Annotations: map[string]string{schedule.AnnotationTarget: "cluster clusters/example"}},
		Spec:   batchv1.CronJobSpec{Schedule: "0 2 * * *", TimeZone: ptr.To("UTC"), Suspend: ptr.To(false)},
		Status: batchv1.CronJobStatus{LastScheduleTime: &last, LastSuccessfulTime: &last},
	}
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: "hcpsnap-clusters-example-29000000",
		Labels: cj.Labels, CreationTimestamp: last,
		OwnerReferences: []metav1.OwnerReference{{Kind: "CronJob", UID: "u1", Controller: ptr.To(true)}}},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}}

	o, _, out := scheduleOptions(t, []runtime.Object{cj, job}, nil, "schedule", "--list")
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "NAMESPACE  NAME                      SCHEDULE         SUSPENDED  LAST RUN              RESULT    LAST SUCCESS          NEXT RUN              TARGET\n" +
		"clusters   hcpsnap-clusters-example  0 2 * * * (UTC)  false      2026-01-15T02:00:00Z  Complete  2026-01-15T02:00:00Z  2026-01-16T02:00:00Z  cluster clusters/example\n"
	if out.String() != want {
		t.Errorf("--list\n got %q\nwant %q", out.String(), want)
	}

	o, _, out = scheduleOptions(t, []runtime.Object{cj, job}, nil, "-o", "json", "schedule", "--list", "--all-namespaces")
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON object: %v: %q", err, out.String())
	}
	for k, v := range map[string]any{"message_type": "schedule", "name": "hcpsnap-clusters-example", "lastResult": "Complete",
		"nextRun": "2026-01-16T02:00:00Z", "lastScheduleTime": "2026-01-15T02:00:00Z", "timeZone": "UTC", "suspended": false} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}

	o, _, out = scheduleOptions(t, nil, nil, "schedule", "--list", "--job-namespace", "empty")
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out.String() != "no hcpsnap schedules in namespace empty\n" {
		t.Errorf("empty --list: %q", out.String())
	}
}

func TestScheduleDelete(t *testing.T) {
	const name = "hcpsnap-clusters-example"
	lbl := schedule.Labels("clusters", name)
	objs := []runtime.Object{
		&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: name, Labels: lbl}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: name, Labels: lbl}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: name}},
	}
	o, cs, out := scheduleOptions(t, objs, nil, "schedule", "--delete", "--cluster", "example")
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := kubeWrites(cs); !slices.Equal(got, []string{"delete cronjobs", "delete serviceaccounts"}) {
		t.Errorf("writes %v", got)
	}
	if want := "CronJob/clusters/" + name + " deleted\nServiceAccount/clusters/" + name + " deleted\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}

	o, cs, _ = scheduleOptions(t, []runtime.Object{&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: "nightly"}}}, nil,
		"schedule", "--delete", "--name", "nightly")
	err := o.Run(context.Background())
	if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), "CronJob/clusters/nightly is not managed by this schedule") {
		t.Errorf("delete of a stranger: %v", err)
	}
	if w := kubeWrites(cs); len(w) > 0 {
		t.Errorf("wrote %v", w)
	}

	o, _, _ = scheduleOptions(t, nil, nil, "schedule", "--delete", "--name", "nightly")
	if err := o.Run(context.Background()); exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), "no schedule nightly in namespace clusters") {
		t.Errorf("delete of nothing: %v", err)
	}
}

// TestScheduleRBACIsDeploy checks that the rendered role is deploy/rbac.yaml's,
// read from the embedded file at render time.
func TestScheduleRBACIsDeploy(t *testing.T) {
	clearHCPSNAPEnv(t)
	stdout, stderr, code := run(t, nil, scheduleBase...)
	if code != exitcode.OK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var role rbacv1.ClusterRole
	first := strings.Split(stdout, "\n---\n")[0]
	if err := yaml.Unmarshal([]byte(first), &role); err != nil || role.Kind != "ClusterRole" {
		t.Fatalf("first document: %v %q", err, first)
	}
	want, _ := deploy.ClusterRole(deploy.BackupRole)
	wantJSON, _ := json.Marshal(want.Rules)
	gotJSON, _ := json.Marshal(role.Rules)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("rules\n got %s\nwant %s", gotJSON, wantJSON)
	}
}

// TestScheduleFleetArgs checks the target arguments of a selector's and of
// every namespace's job, and where their CronJob and bindings go.
func TestScheduleFleetArgs(t *testing.T) {
	rest := slices.Clone(scheduleBase[3:]) // without --cluster example
	tests := []struct {
		name     string
		args     []string
		wantArgs []string
		wantNS   string
	}{
		{"selector", append([]string{"schedule", "--selector", "backup=nightly", "--namespace", "hosted"}, rest...),
			[]string{"--selector=backup=nightly", "--namespace=hosted"}, "hosted"},
		{"selector, job namespace", append([]string{"schedule", "--selector", "backup=nightly", "--job-namespace", "hcpsnap"}, rest...),
			[]string{"--selector=backup=nightly", "--namespace=clusters"}, "hcpsnap"},
		{"all namespaces", append([]string{"schedule", "--all-namespaces", "--job-namespace", "hcpsnap"}, rest...),
			[]string{"--all-namespaces"}, "hcpsnap"},
		{"all namespaces, selector", append([]string{"schedule", "--all-namespaces", "--selector", "tier in (a,b)", "--job-namespace", "hcpsnap"}, rest...),
			[]string{"--all-namespaces", "--selector=tier in (a,b)"}, "hcpsnap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cj := renderedCronJob(t, nil, tt.args...)
			args := jobArgs(cj)
			i := slices.Index(args, "backup")
			if got := args[i+1 : i+1+len(tt.wantArgs)]; !slices.Equal(got, tt.wantArgs) {
				t.Errorf("target args %q, want %q", got, tt.wantArgs)
			}
			if cj.Namespace != tt.wantNS || cj.Spec.JobTemplate.Spec.Template.Spec.ServiceAccountName != cj.Name {
				t.Errorf("CronJob %s/%s with ServiceAccount %s", cj.Namespace, cj.Name, cj.Spec.JobTemplate.Spec.Template.Spec.ServiceAccountName)
			}
		})
	}
}

func hasFlag(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}
