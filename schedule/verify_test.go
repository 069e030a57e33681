package schedule

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
)

func verifySpec() VerifySpec {
	return VerifySpec{
		Spec: Spec{Name: DefaultVerifyName("example"), JobNamespace: "hcpsnap", Cron: "0 4 * * *", TimeZone: "UTC",
			StartingDeadline: time.Hour, ActiveDeadline: 2 * time.Hour, Image: testImage,
			Credentials: Credentials{Secret: "s3"}},
		Cluster:    "example",
		VerifyArgs: []string{"--cluster=example", "--bucket=bkt"},
	}
}

// A verify schedule is a ServiceAccount without an API token and the
// CronJob, no RBAC; the pod runs verify --drill on its scratch emptyDir.
func TestRenderVerify(t *testing.T) {
	s := verifySpec()
	o, err := RenderVerify(s)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := kindsOf(o), []string{"ServiceAccount", "CronJob"}; !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	for _, obj := range o.List() {
		if m, ok := obj.(interface{ GetLabels() map[string]string }); !ok || !OwnedBy(m.GetLabels(), "hcpsnap", s.Name) {
			t.Errorf("%T lacks the schedule's labels", obj)
		}
	}
	if a := o.ServiceAccount.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("ServiceAccount automountServiceAccountToken %v, want false", a)
	}
	pod := o.CronJob.Spec.JobTemplate.Spec.Template.Spec
	if a := pod.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("pod automountServiceAccountToken %v, want false", a)
	}
	c := pod.Containers[0]
	want := append(append(slices.Clone(GlobalArgs), "verify", "--drill", "--scratch-dir="+ScratchDir), s.VerifyArgs...)
	if !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	if got := o.CronJob.Annotations[AnnotationTarget]; got != "verify example" {
		t.Errorf("target annotation %q", got)
	}
	var scratch *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == "scratch" {
			scratch = &pod.Volumes[i]
		}
	}
	if scratch == nil || scratch.EmptyDir == nil || scratch.EmptyDir.SizeLimit == nil || scratch.EmptyDir.SizeLimit.Cmp(apiresource.MustParse(ScratchSizeLimit)) != 0 {
		t.Fatalf("scratch volume %+v, want an emptyDir of at most %s", scratch, ScratchSizeLimit)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "scratch" && m.MountPath == ScratchDir && !m.ReadOnly
	}) {
		t.Errorf("mounts %+v lack the scratch emptyDir at %s", c.VolumeMounts, ScratchDir)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("root file system not read-only: %+v", sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || len(c.Resources.Limits) != 0 {
		t.Errorf("resources %+v, want CPU and memory requests and no limit", c.Resources)
	}
	if envNamed(c, "AWS_ACCESS_KEY_ID") == nil || envNamed(c, "AWS_ACCESS_KEY_ID").ValueFrom.SecretKeyRef.Name != "s3" {
		t.Errorf("credentials not from Secret s3: %+v", c.Env)
	}
	if bl := o.CronJob.Spec.JobTemplate.Spec.BackoffLimit; bl == nil || *bl != 0 {
		t.Errorf("backoffLimit %v, want 0: a failed drill fails the Job", bl)
	}
}

// With an IAM role, the web identity token is still projected although the
// API token is not mounted; the CA ConfigMap becomes --s3-ca-bundle.
func TestRenderVerifyWebIdentityAndCA(t *testing.T) {
	s := verifySpec()
	s.Credentials = Credentials{RoleARN: "arn:aws:iam::1:role/drill"}
	s.S3CAConfigMap = "s3-ca"
	s.Cluster, s.VerifyArgs = "", []string{"--bucket=bkt"}
	s.Name = DefaultVerifyName("")
	o, err := RenderVerify(s)
	if err != nil {
		t.Fatal(err)
	}
	pod := o.CronJob.Spec.JobTemplate.Spec.Template.Spec
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Projected != nil }) {
		t.Errorf("no projected web identity token: %+v", pod.Volumes)
	}
	args := pod.Containers[0].Args
	if args[len(args)-1] != "--s3-ca-bundle="+S3CADir+"/"+S3CAKey {
		t.Errorf("args %q do not end with the CA bundle", args)
	}
	if got := o.CronJob.Annotations[AnnotationTarget]; got != "verify all" || o.CronJob.Name != "hcpsnap-verify" {
		t.Errorf("every cluster's schedule: name %s, target %q", o.CronJob.Name, got)
	}
}

func TestRenderVerifyRefuses(t *testing.T) {
	for name, change := range map[string]func(*VerifySpec){
		"bad cluster": func(s *VerifySpec) { s.Cluster = "Example_1" },
		"rules":       func(s *VerifySpec) { s.Rules = []rbacv1.PolicyRule{{Verbs: []string{"get"}}} },
		"a target":    func(s *VerifySpec) { s.Target = Target{Namespace: "clusters", Cluster: "example"} },
		"bad cron":    func(s *VerifySpec) { s.Cron = "daily" },
		"tag image":   func(s *VerifySpec) { s.Image = "registry.example/hcpsnap:latest" },
		"no creds":    func(s *VerifySpec) { s.Credentials = Credentials{} },
		"long name":   func(s *VerifySpec) { s.Name = strings.Repeat("a", 60) },
		"bad ns":      func(s *VerifySpec) { s.JobNamespace = "Hcpsnap" },
	} {
		t.Run(name, func(t *testing.T) {
			s := verifySpec()
			change(&s)
			if _, err := RenderVerify(s); err == nil {
				t.Error("rendered")
			}
		})
	}
}

func TestDefaultVerifyName(t *testing.T) {
	tests := []struct{ cluster, want string }{
		{"example", "hcpsnap-verify-example"},
		{"", "hcpsnap-verify"},
		{"all", "hcpsnap-verify-all"},
	}
	for _, tt := range tests {
		if got := DefaultVerifyName(tt.cluster); got != tt.want {
			t.Errorf("DefaultVerifyName(%q) = %q, want %q", tt.cluster, got, tt.want)
		}
	}
	long := strings.Repeat("c", 63)
	if n := DefaultVerifyName(long); len(n) > MaxNameLength || CheckName(n) != nil || n == DefaultVerifyName(long[:62]) {
		t.Errorf("DefaultVerifyName of a long cluster: %q", n)
	}
}
