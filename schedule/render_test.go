package schedule

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/hcpsnap/hcpsnap/deploy"
)

const testImage = "quay.io/acme/hcpsnap@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testSpec(t *testing.T) Spec {
	t.Helper()
	role, err := deploy.ClusterRole(deploy.BackupRole)
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Name: "hcpsnap-clusters-example", JobNamespace: "clusters",
		Target: Target{Namespace: "clusters", Cluster: "example"},
		Cron:   "0 2 * * *", TimeZone: "Europe/Paris",
		StartingDeadline: time.Hour, ActiveDeadline: 2 * time.Hour,
		SuccessfulJobsHistory: 3, FailedJobsHistory: 5,
		Image:       testImage,
		BackupArgs:  []string{"--cluster=example", "--namespace=clusters", "--bucket=backups", "--online=true"},
		Credentials: Credentials{Secret: "hcpsnap-s3"},
		Rules:       role.Rules,
	}
}

func render(t *testing.T, s Spec) *Objects {
	t.Helper()
	o, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func envNamed(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// TestRenderOneCluster checks the structure of a one-cluster schedule:
// ownership labels everywhere, deploy/rbac.yaml's rules, bindings in exactly
// the two namespaces, and the CronJob's and pod's settings.
func TestRenderOneCluster(t *testing.T) {
	s := testSpec(t)
	o := render(t, s)

	for _, obj := range o.List() {
		m := obj.(metav1.Object)
		if !OwnedBy(m.GetLabels(), "clusters", s.Name) {
			t.Errorf("%s %s lacks the ownership labels: %v", kindOf(obj), m.GetName(), m.GetLabels())
		}
	}
	role, _ := deploy.ClusterRole(deploy.BackupRole)
	if !reflect.DeepEqual(o.ClusterRole.Rules, role.Rules) {
		t.Errorf("ClusterRole rules differ from deploy/rbac.yaml's %s:\n got %+v\nwant %+v", deploy.BackupRole, o.ClusterRole.Rules, role.Rules)
	}
	if o.ClusterRoleBinding != nil {
		t.Error("one cluster got a ClusterRoleBinding")
	}
	var bound []string
	for _, rb := range o.RoleBindings {
		bound = append(bound, rb.Namespace)
		want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: s.Name, Namespace: "clusters"}}
		if !reflect.DeepEqual(rb.Subjects, want) || rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != o.ClusterRole.Name {
			t.Errorf("RoleBinding %s/%s binds %+v to %+v", rb.Namespace, rb.Name, rb.Subjects, rb.RoleRef)
		}
	}
	if want := []string{"clusters", "clusters-example"}; !slices.Equal(bound, want) {
		t.Errorf("RoleBindings in %v, want %v", bound, want)
	}
	if o.ServiceAccount.Namespace != "clusters" || o.ServiceAccount.Name != s.Name {
		t.Errorf("ServiceAccount %s/%s", o.ServiceAccount.Namespace, o.ServiceAccount.Name)
	}

	cj := o.CronJob
	if cj.Namespace != "clusters" || cj.Name != s.Name || cj.Annotations[AnnotationTarget] != "cluster clusters/example" {
		t.Errorf("CronJob %s/%s annotations %v", cj.Namespace, cj.Name, cj.Annotations)
	}
	sp := cj.Spec
	if sp.Schedule != "0 2 * * *" || *sp.TimeZone != "Europe/Paris" || sp.ConcurrencyPolicy != batchv1.ForbidConcurrent ||
		*sp.StartingDeadlineSeconds != 3600 || *sp.SuccessfulJobsHistoryLimit != 3 || *sp.FailedJobsHistoryLimit != 5 || *sp.Suspend {
		t.Errorf("CronJob spec: %+v", sp)
	}
	job := sp.JobTemplate.Spec
	if *job.BackoffLimit != 0 || *job.ActiveDeadlineSeconds != 7200 {
		t.Errorf("Job: backoffLimit %d, activeDeadlineSeconds %d", *job.BackoffLimit, *job.ActiveDeadlineSeconds)
	}
	if !OwnedBy(sp.JobTemplate.Labels, "clusters", s.Name) || !OwnedBy(job.Template.Labels, "clusters", s.Name) {
		t.Error("the Jobs or pods would not carry the ownership labels")
	}
	pod := job.Template.Spec
	if pod.RestartPolicy != corev1.RestartPolicyNever || pod.ServiceAccountName != s.Name || !*pod.AutomountServiceAccountToken {
		t.Errorf("pod: restartPolicy %s, serviceAccount %s", pod.RestartPolicy, pod.ServiceAccountName)
	}
	if psc := pod.SecurityContext; !*psc.RunAsNonRoot || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || psc.RunAsUser != nil {
		t.Errorf("pod securityContext %+v (no fixed UID: OpenShift assigns one)", psc)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if !*sc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || sc.Privileged != nil {
		t.Errorf("container securityContext %+v", sc)
	}
	if c.Image != testImage {
		t.Errorf("image %q", c.Image)
	}
	wantArgs := append(append(slices.Clone(GlobalArgs), "backup"), s.BackupArgs...)
	if !slices.Equal(c.Args, wantArgs) || len(c.Command) > 0 {
		t.Errorf("command %q args %q, want the image's entrypoint with %q", c.Command, c.Args, wantArgs)
	}
	if !slices.Contains(c.Args, "--log-format=json") {
		t.Error("the job does not log JSON")
	}
	// /tmp is an emptyDir, and the run files live under it.
	var tmpVolume bool
	for _, v := range pod.Volumes {
		if v.Name == "tmp" && v.EmptyDir != nil {
			tmpVolume = true
		}
	}
	if !tmpVolume || !slices.Contains(c.VolumeMounts, corev1.VolumeMount{Name: "tmp", MountPath: "/tmp"}) {
		t.Errorf("no emptyDir at /tmp: volumes %+v mounts %+v", pod.Volumes, c.VolumeMounts)
	}
	if e := envNamed(c, "HCPSNAP_STATE_DIR"); e == nil || !strings.HasPrefix(e.Value, TmpDir+"/") {
		t.Errorf("HCPSNAP_STATE_DIR = %+v, want a folder under /tmp", e)
	}
	// S3 credentials from the Secret's documented keys.
	for name, optional := range map[string]bool{"AWS_ACCESS_KEY_ID": false, "AWS_SECRET_ACCESS_KEY": false, "AWS_SESSION_TOKEN": true} {
		e := envNamed(c, name)
		if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("env %s = %+v, want a secretKeyRef", name, e)
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != "hcpsnap-s3" || ref.Key != name || (ref.Optional != nil && *ref.Optional) != optional {
			t.Errorf("env %s from %+v", name, ref)
		}
	}
	for _, absent := range []string{"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION", "AWS_ENDPOINT_URL_S3"} {
		if e := envNamed(c, absent); e != nil {
			t.Errorf("env %s set: %+v", absent, e)
		}
	}
}

func TestRenderWebIdentityEndpointAndCA(t *testing.T) {
	s := testSpec(t)
	s.Credentials = Credentials{RoleARN: "arn:aws:iam::123456789012:role/hcpsnap"}
	s.S3Endpoint, s.Region, s.S3CAConfigMap = "https://minio.example:9000", "eu-west-1", "s3-ca"
	c := render(t, s).CronJob.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
	pod := render(t, s).CronJob.Spec.JobTemplate.Spec.Template.Spec

	if e := envNamed(c, "AWS_ROLE_ARN"); e == nil || e.Value != s.Credentials.RoleARN {
		t.Errorf("AWS_ROLE_ARN = %+v", e)
	}
	tokenFile := envNamed(c, "AWS_WEB_IDENTITY_TOKEN_FILE")
	if tokenFile == nil || tokenFile.Value != WebIdentityDir+"/token" {
		t.Fatalf("AWS_WEB_IDENTITY_TOKEN_FILE = %+v", tokenFile)
	}
	for _, absent := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		if envNamed(c, absent) != nil {
			t.Errorf("env %s set with web identity", absent)
		}
	}
	if e := envNamed(c, "AWS_ENDPOINT_URL_S3"); e == nil || e.Value != s.S3Endpoint {
		t.Errorf("AWS_ENDPOINT_URL_S3 = %+v", e)
	}
	if e := envNamed(c, "AWS_REGION"); e == nil || e.Value != "eu-west-1" {
		t.Errorf("AWS_REGION = %+v", e)
	}
	var token *corev1.ServiceAccountTokenProjection
	var ca *corev1.ConfigMapVolumeSource
	for _, v := range pod.Volumes {
		if v.Projected != nil && len(v.Projected.Sources) == 1 {
			token = v.Projected.Sources[0].ServiceAccountToken
			if !slices.Contains(c.VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: WebIdentityDir, ReadOnly: true}) {
				t.Errorf("token volume %s not mounted read-only at %s: %+v", v.Name, WebIdentityDir, c.VolumeMounts)
			}
		}
		if v.ConfigMap != nil {
			ca = v.ConfigMap
			if !slices.Contains(c.VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: S3CADir, ReadOnly: true}) {
				t.Errorf("CA volume %s not mounted read-only at %s: %+v", v.Name, S3CADir, c.VolumeMounts)
			}
		}
	}
	if token == nil || token.Audience != "sts.amazonaws.com" || token.ExpirationSeconds == nil || *token.ExpirationSeconds != WebIdentityTokenTTL || token.Path != "token" {
		t.Errorf("projected token %+v", token)
	}
	if ca == nil || ca.Name != "s3-ca" || !reflect.DeepEqual(ca.Items, []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}) {
		t.Errorf("CA ConfigMap volume %+v", ca)
	}
	if last := c.Args[len(c.Args)-1]; last != "--s3-ca-bundle="+S3CADir+"/ca.crt" {
		t.Errorf("last argument %q, want the mounted CA bundle", last)
	}
}

func TestRenderSelector(t *testing.T) {
	for _, tgt := range []Target{
		{Namespace: "clusters", Selector: "backup=nightly"},
		{AllNamespaces: true, Selector: "backup=nightly"},
		{AllNamespaces: true},
	} {
		s := testSpec(t)
		s.Target = tgt
		s.JobNamespace = "hcpsnap"
		s.Name = DefaultName(tgt)
		o := render(t, s)
		if len(o.RoleBindings) != 0 || o.ClusterRoleBinding == nil {
			t.Fatalf("%s: RoleBindings %d, ClusterRoleBinding %v", tgt, len(o.RoleBindings), o.ClusterRoleBinding)
		}
		crb := o.ClusterRoleBinding
		if crb.RoleRef.Name != o.ClusterRole.Name || crb.Subjects[0].Namespace != "hcpsnap" || crb.Subjects[0].Name != s.Name {
			t.Errorf("%s: ClusterRoleBinding %+v", tgt, crb)
		}
		if got := kindsOf(o); !slices.Equal(got, []string{"ClusterRole", "ServiceAccount", "ClusterRoleBinding", "CronJob"}) {
			t.Errorf("%s: objects %v", tgt, got)
		}
		if o.CronJob.Annotations[AnnotationTarget] != tgt.String() {
			t.Errorf("%s: annotation %q", tgt, o.CronJob.Annotations[AnnotationTarget])
		}
	}
}

func kindsOf(o *Objects) []string {
	var k []string
	for _, obj := range o.List() {
		k = append(k, kindOf(obj))
	}
	return k
}

func TestRenderRefusesAnInvalidSpec(t *testing.T) {
	tests := map[string]func(*Spec){
		"bad cron":             func(s *Spec) { s.Cron = "0 2 * *" },
		"TZ in the cron":       func(s *Spec) { s.Cron = "CRON_TZ=UTC 0 2 * * *" },
		"bad time zone":        func(s *Spec) { s.TimeZone = "Mars/Base" },
		"tag":                  func(s *Spec) { s.Image = "quay.io/acme/hcpsnap:v1" },
		"no credentials":       func(s *Spec) { s.Credentials = Credentials{} },
		"two credentials":      func(s *Spec) { s.Credentials.RoleARN = "arn:aws:iam::1:role/x" },
		"no rules":             func(s *Spec) { s.Rules = nil },
		"name too long":        func(s *Spec) { s.Name = strings.Repeat("a", 53) },
		"cluster and selector": func(s *Spec) { s.Target.Selector = "a=b" },
		"no target":            func(s *Spec) { s.Target = Target{Namespace: "clusters"} },
		"bad selector":         func(s *Spec) { s.Target = Target{Namespace: "clusters", Selector: "a b"} },
		"short deadline":       func(s *Spec) { s.StartingDeadline = time.Second },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			s := testSpec(t)
			mutate(&s)
			if _, err := Render(s); err == nil {
				t.Fatal("Render accepted it")
			}
		})
	}
}

// TestWriteYAML checks that the stream is stable, holds no status or null
// timestamps, and decodes back to the rendered objects.
func TestWriteYAML(t *testing.T) {
	o := render(t, testSpec(t))
	var a, b bytes.Buffer
	if err := WriteYAML(&a, "# header\n", o.List()); err != nil {
		t.Fatal(err)
	}
	if err := WriteYAML(&b, "# header\n", render(t, testSpec(t)).List()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two renders of one spec differ")
	}
	out := a.String()
	if !strings.HasPrefix(out, "# header\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n") {
		t.Errorf("stream starts %q", out[:80])
	}
	for _, unwanted := range []string{"creationTimestamp", "status:"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("stream holds %q", unwanted)
		}
	}
	docs := strings.Split(out, "\n---\n")
	if len(docs) != len(o.List()) {
		t.Fatalf("%d documents, want %d", len(docs), len(o.List()))
	}
	var cj batchv1.CronJob
	if err := yaml.UnmarshalStrict([]byte(docs[len(docs)-1]), &cj); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cj.Spec, o.CronJob.Spec) || !reflect.DeepEqual(cj.Labels, o.CronJob.Labels) {
		t.Errorf("the CronJob does not decode back to what was rendered:\n%s", docs[len(docs)-1])
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict([]byte(strings.TrimPrefix(docs[0], "# header\n")), &role); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(role.Rules, o.ClusterRole.Rules) {
		t.Error("the ClusterRole does not decode back to what was rendered")
	}
}
