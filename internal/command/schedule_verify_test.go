package command

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/schedule"
)

var scheduleVerifyBase = []string{"schedule", "verify", "--cluster", "example", "--schedule", "0 4 * * *", "--job-namespace", "hcpsnap",
	"--image", testImage, "--s3-credentials-secret", "hcpsnap-s3", "--bucket", "bkt"}

// schedule verify: each bad flag is one line and exit 2, nothing printed.
func TestScheduleVerifyBadInput(t *testing.T) {
	with := func(extra ...string) []string { return argsWith(scheduleVerifyBase, extra...) }
	without := func(flag string) []string { return argsWithout(scheduleVerifyBase, flag) }
	for _, c := range []struct {
		args []string
		want string
	}{
		{without("--job-namespace"), "--job-namespace is required"},
		{without("--schedule"), "--schedule is required: say when the drill runs"},
		{without("--image"), "--image is required"},
		{without("--s3-credentials-secret"), "no S3 credentials"},
		{without("--bucket"), "--bucket is required"},
		{with("--cluster", "Example_1"), "--cluster \"Example_1\" is not a valid Kubernetes name"},
		{with("--job-namespace", "Hcpsnap"), "--job-namespace \"Hcpsnap\" is not a namespace name"},
		{with("--schedule", "CRON_TZ=UTC 0 4 * * *"), "time zone"},
		{with("--schedule", "every day"), "not a valid cron schedule"},
		{with("--time-zone", "Mars/Olympus"), "--time-zone"},
		{with("--image", "registry.example/hcpsnap:latest"), "--image"},
		{with("--role-arn", "arn:aws:iam::1:role/x"), "two sources of S3 credentials"},
		{with("--name", "Bad_Name"), "--name"},
		{with("--part-size-mib", "1"), "as options of the scheduled drill: --part-size-mib 1 is out of range"},
		{with("--s3-ca-bundle", "/ca.pem"), "s3-ca-bundle"},
		{with("--from", "s3://bkt/backups/example/x/manifest.json"), "not defined: -from"},
		{with("--key-file", "/key"), "not defined: -key-file"},
		{with("--scratch-dir", "/var/tmp"), "not defined: -scratch-dir"},
		{with("--apply", "--delete"), "different actions"},
		{with("--apply", "--dry-run=client"), "contradict"},
		{with("--dry-run", "maybe"), "not a mode"},
		{append([]string{"-o", "markdown"}, scheduleVerifyBase...), "markdown"},
	} {
		t.Run(strings.Join(c.args[2:], " "), func(t *testing.T) {
			clearHCPSNAPEnv(t)
			t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
			checkUsageError(t, c.args, c.want)
		})
	}
}

// The rendered job runs verify --drill on the scratch emptyDir with
// --cluster first (or none, for every cluster), then the options set here
// or in their HCPSNAP_ variables, in verify's order; the name and the
// target annotation follow the cluster.
func TestScheduleVerifyRender(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantArgs []string
		wantName string
		target   string
	}{
		{name: "one cluster", args: scheduleVerifyBase,
			wantArgs: []string{"--cluster=example", "--bucket=bkt"}, wantName: "hcpsnap-verify-example", target: "verify example"},
		{name: "every cluster, prefix from the environment", env: map[string]string{"HCPSNAP_PREFIX": "nightly"},
			args:     slices.Delete(slices.Clone(scheduleVerifyBase), 2, 4),
			wantArgs: []string{"--prefix=nightly", "--bucket=bkt"}, wantName: "hcpsnap-verify", target: "verify all"},
		{name: "S3 options and a CA", args: append(slices.Clone(scheduleVerifyBase), "--s3-path-style", "--concurrency", "2", "--s3-ca-configmap", "ca", "--name", "drill"),
			wantArgs: []string{"--cluster=example", "--bucket=bkt", "--s3-path-style=true", "--concurrency=2", "--s3-ca-bundle=/etc/hcpsnap/s3-ca/ca.crt"},
			wantName: "drill", target: "verify example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cj := renderedCronJob(t, tt.env, tt.args...)
			want := append([]string{"--log-format=json", "--output=json", "verify", "--drill", "--scratch-dir=" + schedule.ScratchDir}, tt.wantArgs...)
			if got := jobArgs(cj); !slices.Equal(got, want) {
				t.Errorf("job args\n got %q\nwant %q", got, want)
			}
			if cj.Name != tt.wantName || cj.Annotations[schedule.AnnotationTarget] != tt.target {
				t.Errorf("CronJob %s, target %q; want %s, %q", cj.Name, cj.Annotations[schedule.AnnotationTarget], tt.wantName, tt.target)
			}
		})
	}

	clearHCPSNAPEnv(t)
	stdout, stderr, code := run(t, nil, append([]string{"-o", "json"}, scheduleVerifyBase...)...)
	if code != exitcode.OK {
		t.Fatalf("-o json: exit %d: %s", code, stderr)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		kinds = append(kinds, m["kind"].(string))
	}
	if want := []string{"ServiceAccount", "CronJob"}; !slices.Equal(kinds, want) {
		t.Errorf("-o json kinds %v, want %v: a drill has no RBAC", kinds, want)
	}
}

// TestScheduleVerifyFlagsCoverVerify fails when a verify flag is neither
// passed through nor excluded with a reason, or cannot be written as an
// argument: a flag added to verify later is not lost.
func TestScheduleVerifyFlagsCoverVerify(t *testing.T) {
	o := &ScheduleVerifyOptions{}
	_ = o.flags()
	checkPassThrough(t, "verify", (&VerifyOptions{}).flags, o.passThrough, verifyScheduleExcluded)
}

// TestScheduleVerifyArgsReparse parses the job's arguments with the real
// verify command and checks they mean what was given to schedule verify.
func TestScheduleVerifyArgsReparse(t *testing.T) {
	cj := renderedCronJob(t, nil, append(slices.Clone(scheduleVerifyBase), "--prefix", "nightly", "--s3-path-style")...)
	var got *VerifyOptions
	cmd := newVerifyCommand(&bytes.Buffer{}, &bytes.Buffer{})
	o := &VerifyOptions{}
	cmd.Flags = o.flags()
	cmd.Action = func(context.Context, *cli.Command) error { got = o; return nil }
	args := jobArgs(cj)
	if err := cmd.Run(context.Background(), append([]string{"verify"}, args[slices.Index(args, "verify")+1:]...)); err != nil {
		t.Fatal(err)
	}
	if got == nil || !got.Drill || got.ScratchDir != schedule.ScratchDir || got.Cluster != "example" || got.Prefix != "nightly" ||
		got.S3.Bucket != "bkt" || !got.S3.PathStyle || got.From != "" || got.KeyFile != "" {
		t.Fatalf("verify parsed the job's arguments as %+v", got)
	}
}

// scheduleVerifyOptions returns validated options of args for a test that
// runs them on a fake.
func scheduleVerifyOptions(t *testing.T, kubeObjs []runtime.Object, args ...string) (*ScheduleVerifyOptions, *fake.Clientset, *bytes.Buffer) {
	t.Helper()
	clearHCPSNAPEnv(t)
	var out bytes.Buffer
	captured := &ScheduleVerifyOptions{scheduledJob: scheduledJob{Out: &out}}
	root := New(strings.NewReader(""), &out, &bytes.Buffer{})
	for _, c := range root.Commands {
		if c.Name != "schedule" {
			continue
		}
		for i, sub := range c.Commands {
			if sub.Name == "verify" {
				// Stop after Validate, with the options the command line built.
				c.Commands[i] = captured.command(func(ctx context.Context, _ *cli.Command) error {
					captured.Global = globalsFrom(ctx)
					return captured.Validate()
				})
			}
		}
	}
	if err := root.Run(context.Background(), append([]string{"hcpsnap"}, args...)); err != nil {
		t.Fatalf("validate %v: %v", args, err)
	}
	cs := fake.NewClientset(kubeObjs...)
	captured.kube = cs
	captured.now = func() time.Time { return time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC) }
	return captured, cs, &out
}

func TestScheduleVerifyApplyPreconditions(t *testing.T) {
	ready := append(namespaces("hcpsnap"), s3Secret("hcpsnap"))
	tests := []struct {
		name     string
		kubeObjs []runtime.Object
		args     []string
		want     string
	}{
		{name: "no job namespace", kubeObjs: []runtime.Object{s3Secret("hcpsnap")}, want: "namespace hcpsnap does not exist"},
		{name: "no Secret", kubeObjs: namespaces("hcpsnap"), want: "no such Secret in namespace hcpsnap"},
		{name: "Secret without the keys",
			kubeObjs: append(namespaces("hcpsnap"), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "hcpsnap", Name: "hcpsnap-s3"}, Data: map[string][]byte{"access": []byte("x")}}),
			want:     "has no key AWS_ACCESS_KEY_ID"},
		{name: "no CA ConfigMap", kubeObjs: ready, args: []string{"--s3-ca-configmap", "s3-ca"}, want: "no such ConfigMap"},
		{name: "a stranger's CronJob", kubeObjs: append(slices.Clone(ready), &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "hcpsnap", Name: "hcpsnap-verify-example"}}),
			want: "not managed by this schedule"},
		{name: "a stranger's ServiceAccount", kubeObjs: append(slices.Clone(ready), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "hcpsnap", Name: "hcpsnap-verify-example"}}),
			want: "not managed by this schedule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append(slices.Clone(scheduleVerifyBase), tt.args...), "--apply")
			o, cs, out := scheduleVerifyOptions(t, tt.kubeObjs, args...)
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

// A server-side dry run sends the two objects with dryRun; --apply
// dry-runs them too, then writes exactly them, and no role or binding;
// --delete removes them again.
func TestScheduleVerifyApplyDryRunAndDelete(t *testing.T) {
	objs := append(namespaces("hcpsnap"), s3Secret("hcpsnap"))

	o, cs, out := scheduleVerifyOptions(t, objs, append(slices.Clone(scheduleVerifyBase), "--dry-run=server")...)
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
	if dryRuns != 2 || !strings.Contains(out.String(), "nothing was persisted") {
		t.Errorf("%d dry-run patches, want 2; output %q", dryRuns, out.String())
	}

	o, cs, out = scheduleVerifyOptions(t, objs, append(slices.Clone(scheduleVerifyBase), "--apply")...)
	var patches []string
	cs.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchActionImpl)
		if slices.Equal(p.PatchOptions.DryRun, []string{metav1.DryRunAll}) {
			// The fake ignores dryRun: answer as the server would.
			patches = append(patches, "dry-run "+p.GetResource().Resource)
			return true, nil, nil
		}
		patches = append(patches, "apply "+p.GetResource().Resource)
		return false, nil, nil
	})
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"dry-run serviceaccounts", "dry-run cronjobs", "apply serviceaccounts", "apply cronjobs"}; !slices.Equal(patches, want) {
		t.Errorf("patches %v, want %v: a server-side dry run of both, then the ServiceAccount and the CronJob only", patches, want)
	}
	want := "drills the newest backup of cluster example under s3://bkt/backups/ at \"0 4 * * *\" (UTC); next run 2026-01-16T04:00:00Z"
	if !strings.Contains(out.String(), want) {
		t.Errorf("output %q lacks %q", out.String(), want)
	}
	cj, err := cs.BatchV1().CronJobs("hcpsnap").Get(context.Background(), "hcpsnap-verify-example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !schedule.OwnedBy(cj.Labels, "hcpsnap", "hcpsnap-verify-example") {
		t.Errorf("labels %v", cj.Labels)
	}

	// --delete needs no more than the name's parts: the cluster and the
	// job's namespace.
	sa, err := cs.CoreV1().ServiceAccounts("hcpsnap").Get(context.Background(), "hcpsnap-verify-example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o, cs, out = scheduleVerifyOptions(t, []runtime.Object{cj, sa}, "schedule", "verify", "--cluster", "example", "--job-namespace", "hcpsnap", "--delete")
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := kubeWrites(cs); !slices.Equal(got, []string{"delete cronjobs", "delete serviceaccounts"}) {
		t.Errorf("--delete writes %v", got)
	}
	if want := "CronJob/hcpsnap/hcpsnap-verify-example deleted\nServiceAccount/hcpsnap/hcpsnap-verify-example deleted\n"; out.String() != want {
		t.Errorf("--delete output %q, want %q", out.String(), want)
	}
}

// A failed drill's Job shows in schedule --list as Failed, with the
// target the annotation names.
func TestScheduleVerifyListsAFailedDrill(t *testing.T) {
	clearHCPSNAPEnv(t)
	o, cs, _ := scheduleVerifyOptions(t, append(namespaces("hcpsnap"), s3Secret("hcpsnap")), append(slices.Clone(scheduleVerifyBase), "--apply")...)
	if err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	cj, err := cs.BatchV1().CronJobs("hcpsnap").Get(context.Background(), "hcpsnap-verify-example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cj.UID = "drill-uid"
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "hcpsnap", Name: "hcpsnap-verify-example-29000000", Labels: cj.Labels,
		CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 15, 4, 0, 0, 0, time.UTC)),
		OwnerReferences:   []metav1.OwnerReference{{Kind: "CronJob", UID: cj.UID, Controller: ptr.To(true)}}},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobFailed, Status: corev1.ConditionTrue}}}}
	lo, _, out := scheduleOptions(t, []runtime.Object{cj, job}, nil, "-o", "json", "schedule", "--list", "--job-namespace", "hcpsnap")
	if err := lo.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var st schedule.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("--list: %v: %q", err, out.String())
	}
	if st.Name != "hcpsnap-verify-example" || st.Target != "verify example" || st.LastResult != schedule.ResultFailed {
		t.Errorf("--list %+v, want the drill Failed", st)
	}
}
