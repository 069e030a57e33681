//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hcpsnap/hcpsnap/deploy"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// unusedImage is a well-formed digest reference for schedules that never run
// (suspended, or firing on 1 January only): nothing pulls it.
const unusedImage = "registry.invalid/hcpsnap@sha256:0000000000000000000000000000000000000000000000000000000000000000"

const scheduleSecret = "hcpsnap-s3"

// scheduleArgs are the arguments of `hcpsnap schedule` for the local
// environment: the HostedCluster, namespace and bucket come from its
// HCPSNAP_ variables, the S3 endpoint is MinIO's as the pods reach it.
func (e *testEnv) scheduleArgs(image string, extra ...string) []string {
	args := []string{"schedule", "--schedule", "0 3 1 1 *", "--time-zone", "Europe/Paris", "--image", image,
		"--s3-credentials-secret", scheduleSecret, "--s3-endpoint", e.vars["AWS_ENDPOINT_URL_S3"], "--region", e.vars["AWS_REGION"],
		"--prefix", "scheduled", "--online"}
	return append(args, extra...)
}

// createS3Secret puts the environment's S3 credentials into the Secret
// the scheduled job reads them from.
func (e *testEnv) createS3Secret(t *testing.T, namespace string) {
	t.Helper()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: scheduleSecret},
		StringData: map[string]string{"AWS_ACCESS_KEY_ID": e.vars["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": e.vars["AWS_SECRET_ACCESS_KEY"]}}
	_, err := e.kube.CoreV1().Secrets(namespace).Create(context.Background(), sec, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.CoreV1().Secrets(namespace).Delete(context.Background(), scheduleSecret, metav1.DeleteOptions{})
	})
}

// hcpsnapObjects lists every object of the kinds schedule writes that
// carries app.kubernetes.io/managed-by=hcpsnap, as "Kind/namespace/name".
func (e *testEnv) hcpsnapObjects(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: schedule.LabelManagedBy + "=" + schedule.ManagedBy}
	var out []string
	add := func(kind string, items []metav1.Object) {
		for _, m := range items {
			out = append(out, schedule.Ref{Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName()}.String())
		}
	}
	cjs, err := e.kube.BatchV1().CronJobs("").List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	add("CronJob", metas(cjs.Items, func(x *batchv1.CronJob) metav1.Object { return x }))
	sas, err := e.kube.CoreV1().ServiceAccounts("").List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	add("ServiceAccount", metas(sas.Items, func(x *corev1.ServiceAccount) metav1.Object { return x }))
	rbs, err := e.kube.RbacV1().RoleBindings("").List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	add("RoleBinding", metas(rbs.Items, func(x *rbacv1.RoleBinding) metav1.Object { return x }))
	crbs, err := e.kube.RbacV1().ClusterRoleBindings().List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	add("ClusterRoleBinding", metas(crbs.Items, func(x *rbacv1.ClusterRoleBinding) metav1.Object { return x }))
	crs, err := e.kube.RbacV1().ClusterRoles().List(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	add("ClusterRole", metas(crs.Items, func(x *rbacv1.ClusterRole) metav1.Object { return x }))
	sort.Strings(out)
	return out
}

func metas[T any](items []T, f func(*T) metav1.Object) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = f(&items[i])
	}
	return out
}

// deleteHcpsnapObjects removes whatever a schedule test left, so that a
// failed run does not spoil the next.
func (e *testEnv) deleteHcpsnapObjects(t *testing.T) {
	ctx := context.Background()
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &bg}
	for _, ref := range e.hcpsnapObjects(t) {
		parts := strings.SplitN(ref, "/", 3)
		var err error
		switch {
		case parts[0] == "CronJob":
			err = e.kube.BatchV1().CronJobs(parts[1]).Delete(ctx, parts[2], opts)
		case parts[0] == "ServiceAccount":
			err = e.kube.CoreV1().ServiceAccounts(parts[1]).Delete(ctx, parts[2], opts)
		case parts[0] == "RoleBinding":
			err = e.kube.RbacV1().RoleBindings(parts[1]).Delete(ctx, parts[2], opts)
		case parts[0] == "ClusterRoleBinding":
			err = e.kube.RbacV1().ClusterRoleBindings().Delete(ctx, parts[1], opts)
		case parts[0] == "ClusterRole":
			err = e.kube.RbacV1().ClusterRoles().Delete(ctx, parts[1], opts)
		}
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("clean up %s: %v", ref, err)
		}
	}
}

func oneLine(t *testing.T, res hcpsnapResult) {
	t.Helper()
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(res.stderr), "\n") {
		if strings.HasPrefix(l, "hcpsnap: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 {
		t.Errorf("want one error line, got %q", res.stderr)
	}
}

// TestSchedule applies, lists, checks the permissions of, and deletes a
// schedule on the real API server, and checks that server-side dry runs and
// refused inputs create nothing.
func TestSchedule(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	env.deleteHcpsnapObjects(t)
	t.Cleanup(func() { env.deleteHcpsnapObjects(t) })
	env.createS3Secret(t, env.namespace)
	name := schedule.DefaultName(schedule.Target{Namespace: env.namespace, Cluster: env.cluster})
	rbacName := schedule.RBACName(env.namespace, name)
	state := t.TempDir()

	t.Run("bad input creates nothing", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			args []string
			code exitcode.Code
			want string
		}{
			{"invalid cron", env.scheduleArgs(unusedImage, "--schedule", "0 2 * *", "--apply"), exitcode.Usage, "not a valid cron schedule"},
			{"unknown time zone", env.scheduleArgs(unusedImage, "--time-zone", "Europe/Atlantis", "--apply"), exitcode.Usage, "--time-zone"},
			{"tag", env.scheduleArgs("quay.io/acme/hcpsnap:latest", "--apply"), exitcode.Usage, "pin it by digest"},
			{"no credentials", slices.DeleteFunc(env.scheduleArgs(unusedImage, "--apply"), func(a string) bool { return a == "--s3-credentials-secret" || a == scheduleSecret }), exitcode.Usage, "no S3 credentials"},
			{"both credentials", env.scheduleArgs(unusedImage, "--role-arn", "arn:aws:iam::1:role/x", "--apply"), exitcode.Usage, "two sources"},
			{"selector matching nothing", env.scheduleArgs(unusedImage, "--cluster", "", "--selector", "hcpsnap.io/e2e=nobody", "--apply"), exitcode.Precondition, "matches no HostedCluster"},
			{"missing Secret", env.scheduleArgs(unusedImage, "--s3-credentials-secret", "absent", "--apply"), exitcode.Precondition, "no such Secret"},
			{"cluster not found", env.scheduleArgs(unusedImage, "--cluster", "nope", "--apply"), exitcode.Precondition, "not found"},
			{"selector matching nothing, server dry run", env.scheduleArgs(unusedImage, "--cluster", "", "--selector", "hcpsnap.io/e2e=nobody", "--dry-run=server"), exitcode.Precondition, "matches no HostedCluster"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				res := env.hcpsnap(t, state, tt.args...)
				if exitcode.Code(res.code) != tt.code || !strings.Contains(res.stderr, tt.want) {
					t.Fatalf("exit %d, want %d with %q; stderr %q", res.code, tt.code, tt.want, res.stderr)
				}
				oneLine(t, res)
				if res.stdout != "" {
					t.Errorf("stdout %q", res.stdout)
				}
			})
		}
		if objs := env.hcpsnapObjects(t); len(objs) > 0 {
			t.Fatalf("refused inputs left %v", objs)
		}
	})

	t.Run("server dry run persists nothing", func(t *testing.T) {
		res := env.hcpsnap(t, state, env.scheduleArgs(unusedImage, "--dry-run=server")...)
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		if !strings.Contains(res.stdout, "nothing was persisted") || strings.Count(res.stdout, "server-side dry run") != 5 {
			t.Errorf("output does not say it was a dry run of 5 objects:\n%s", res.stdout)
		}
		// Every namespace's clusters: a ClusterRoleBinding instead of RoleBindings.
		res = env.hcpsnap(t, state, env.scheduleArgs(unusedImage, "--cluster", "", "--all-namespaces", "--job-namespace", env.namespace, "--dry-run=server")...)
		if res.code != 0 {
			t.Fatalf("--all-namespaces: exit %d: %s", res.code, res.stderr)
		}
		if !strings.Contains(res.stdout, "ClusterRoleBinding/") || strings.Contains(res.stdout, "RoleBinding/"+env.namespace) {
			t.Errorf("--all-namespaces dry run:\n%s", res.stdout)
		}
		if objs := env.hcpsnapObjects(t); len(objs) > 0 {
			t.Fatalf("a server dry run left %v", objs)
		}
	})

	t.Run("apply", func(t *testing.T) {
		for i := 0; i < 2; i++ { // the second apply converges on the first
			res := env.hcpsnap(t, state, env.scheduleArgs(unusedImage, "--apply")...)
			if res.code != 0 {
				t.Fatalf("apply %d: exit %d: %s", i+1, res.code, res.stderr)
			}
		}
		want := []string{
			"ClusterRole/" + rbacName,
			"CronJob/" + env.namespace + "/" + name,
			"RoleBinding/" + env.hcpNamespace + "/" + rbacName,
			"RoleBinding/" + env.namespace + "/" + rbacName,
			"ServiceAccount/" + env.namespace + "/" + name,
		}
		sort.Strings(want)
		if got := env.hcpsnapObjects(t); !slices.Equal(got, want) {
			t.Fatalf("objects %v, want %v", got, want)
		}
		cj, err := env.kube.BatchV1().CronJobs(env.namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !schedule.OwnedBy(cj.Labels, env.namespace, name) || cj.Spec.TimeZone == nil || *cj.Spec.TimeZone != "Europe/Paris" ||
			cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
			t.Errorf("CronJob labels %v spec %+v", cj.Labels, cj.Spec)
		}
		for _, m := range cj.ManagedFields {
			if m.Manager != schedule.FieldManager || m.Operation != metav1.ManagedFieldsOperationApply {
				if m.Manager != "kube-controller-manager" {
					t.Errorf("CronJob fields managed by %s (%s)", m.Manager, m.Operation)
				}
			}
		}
		role, err := env.kube.RbacV1().ClusterRoles().Get(ctx, rbacName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want2, _ := deploy.ClusterRole(deploy.BackupRole)
		if got, w := ruleSet(role.Rules), ruleSet(want2.Rules); !slices.Equal(got, w) {
			t.Errorf("ClusterRole rules %v, want deploy/rbac.yaml's %v", got, w)
		}
	})

	t.Run("list", func(t *testing.T) {
		res := env.hcpsnap(t, state, "-o", "json", "schedule", "--list")
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		var st schedule.Status
		if err := json.Unmarshal([]byte(strings.TrimSpace(res.stdout)), &st); err != nil {
			t.Fatalf("--list -o json: %v: %q", err, res.stdout)
		}
		// 03:00 on 1 January in Paris (CET, UTC+1).
		next := time.Date(time.Now().Year(), 1, 1, 2, 0, 0, 0, time.UTC)
		if !time.Now().Before(next) {
			next = next.AddDate(1, 0, 0)
		}
		if st.Name != name || st.Schedule != "0 3 1 1 *" || st.TimeZone != "Europe/Paris" || st.Suspended ||
			st.NextRun == nil || !st.NextRun.Equal(next) || st.LastResult != schedule.ResultNone {
			t.Errorf("--list: %+v, want next run %s", st, next)
		}
		res = env.hcpsnap(t, state, "schedule", "--list", "--all-namespaces")
		if res.code != 0 || !strings.Contains(res.stdout, name) || !strings.Contains(res.stdout, next.Format(time.RFC3339)) {
			t.Errorf("--list --all-namespaces: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("the ServiceAccount has exactly the rendered rules", func(t *testing.T) {
		env.checkScheduleRBAC(t, name)
	})

	t.Run("apply refuses a stranger", func(t *testing.T) {
		other := "hcpsnap-e2e-stranger"
		cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: env.namespace, Name: other},
			Spec: batchv1.CronJobSpec{Schedule: "0 0 1 1 *", Suspend: ptrTo(true), JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{Name: "c", Image: unusedImage}}}}}}}}
		if _, err := env.kube.BatchV1().CronJobs(env.namespace).Create(ctx, cj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.kube.BatchV1().CronJobs(env.namespace).Delete(ctx, other, metav1.DeleteOptions{}) })
		before := env.hcpsnapObjects(t)
		res := env.hcpsnap(t, state, env.scheduleArgs(unusedImage, "--name", other, "--apply")...)
		if exitcode.Code(res.code) != exitcode.Precondition || !strings.Contains(res.stderr, "not managed by this schedule") {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		oneLine(t, res)
		if after := env.hcpsnapObjects(t); !slices.Equal(before, after) {
			t.Errorf("a refused apply changed the objects: %v → %v", before, after)
		}
		res = env.hcpsnap(t, state, "schedule", "--delete", "--name", other)
		if exitcode.Code(res.code) != exitcode.Precondition || !strings.Contains(res.stderr, "not managed by this schedule") {
			t.Fatalf("delete of a stranger: exit %d: %s", res.code, res.stderr)
		}
		oneLine(t, res)
		if _, err := env.kube.BatchV1().CronJobs(env.namespace).Get(ctx, other, metav1.GetOptions{}); err != nil {
			t.Errorf("the stranger's CronJob is gone: %v", err)
		}
	})

	t.Run("delete removes exactly its objects", func(t *testing.T) {
		// Same-named objects without the labels, where the schedule's are not.
		strangers := []struct {
			kind string
			get  func() error
		}{
			{"ServiceAccount", func() error {
				_, err := env.kube.CoreV1().ServiceAccounts(env.hcpNamespace).Get(ctx, name, metav1.GetOptions{})
				return err
			}},
			{"RoleBinding", func() error {
				_, err := env.kube.RbacV1().RoleBindings("default").Get(ctx, rbacName, metav1.GetOptions{})
				return err
			}},
		}
		if _, err := env.kube.CoreV1().ServiceAccounts(env.hcpNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = env.kube.CoreV1().ServiceAccounts(env.hcpNamespace).Delete(ctx, name, metav1.DeleteOptions{})
		})
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: rbacName,
			Labels: map[string]string{schedule.LabelManagedBy: "someone-else", schedule.LabelSchedule: name}},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"}}
		if _, err := env.kube.RbacV1().RoleBindings("default").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.kube.RbacV1().RoleBindings("default").Delete(ctx, rbacName, metav1.DeleteOptions{}) })

		res := env.hcpsnap(t, state, "-o", "json", "schedule", "--delete")
		if res.code != 0 {
			t.Fatalf("exit %d: %s", res.code, res.stderr)
		}
		if n := strings.Count(res.stdout, `"message_type":"deleted"`); n != 5 {
			t.Errorf("%d objects reported deleted, want 5:\n%s", n, res.stdout)
		}
		if objs := env.hcpsnapObjects(t); len(objs) > 0 {
			t.Errorf("left after --delete: %v", objs)
		}
		for _, s := range strangers {
			if err := s.get(); err != nil {
				t.Errorf("the unlabelled %s was touched: %v", s.kind, err)
			}
		}
		res = env.hcpsnap(t, state, "schedule", "--delete")
		if exitcode.Code(res.code) != exitcode.Precondition || !strings.Contains(res.stderr, "no schedule "+name) {
			t.Errorf("second delete: exit %d: %s", res.code, res.stderr)
		}
	})
}

func ptrTo[T any](v T) *T { return &v }

// ruleSet expands rules into sorted "group resource name verb" lines, so
// that two rule lists compare as the permissions they grant.
func ruleSet(rules []rbacv1.PolicyRule) []string {
	set := map[string]bool{}
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{"*"}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, n := range names {
					for _, v := range r.Verbs {
						set[fmt.Sprintf("%s %s %s %s", g, res, n, v)] = true
					}
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// rulesAs asks the API server, impersonating user, which resource rules it
// has in namespace (SelfSubjectRulesReview).
func (e *testEnv) rulesAs(t *testing.T, user string, groups []string, namespace string) []string {
	t.Helper()
	cfg := rest.CopyConfig(e.restConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := client.AuthorizationV1().SelfSubjectRulesReviews().Create(context.Background(),
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: namespace}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rev.Status.Incomplete {
		t.Fatalf("rules review of %s in %s is incomplete: %s", user, namespace, rev.Status.EvaluationError)
	}
	var rules []rbacv1.PolicyRule
	for _, r := range rev.Status.ResourceRules {
		rules = append(rules, rbacv1.PolicyRule{Verbs: r.Verbs, APIGroups: r.APIGroups, Resources: r.Resources, ResourceNames: r.ResourceNames})
	}
	return ruleSet(rules)
}

// checkScheduleRBAC checks, with the API server's own authorizer, that the
// schedule's ServiceAccount holds exactly deploy/rbac.yaml's hcpsnap-backup
// rules in the HostedCluster's and the control plane's namespaces, beyond
// what every ServiceAccount holds, and nothing more anywhere else.
func (e *testEnv) checkScheduleRBAC(t *testing.T, name string) {
	t.Helper()
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + e.namespace, "system:authenticated"}
	user := "system:serviceaccount:" + e.namespace + ":" + name
	// An unbound ServiceAccount's rules: what every one holds.
	baselineUser := "system:serviceaccount:" + e.namespace + ":hcpsnap-e2e-unbound"
	role, err := deploy.ClusterRole(deploy.BackupRole)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{e.namespace, e.hcpNamespace, "default", "kube-system"} {
		baseline := e.rulesAs(t, baselineUser, groups, ns)
		want := slices.Clone(baseline)
		if ns == e.namespace || ns == e.hcpNamespace {
			want = append(want, ruleSet(role.Rules)...)
		}
		want = ruleSet(rulesOf(want))
		if got := e.rulesAs(t, user, groups, ns); !slices.Equal(got, want) {
			t.Errorf("in namespace %s the ServiceAccount can\n%s\nwant\n%s", ns, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	kubectl := filepath.Join(e.vars["LOCALENV_BIN_DIR"], "kubectl")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "secrets", "-n", e.hcpNamespace}, "yes"},
		{[]string{"patch", "hostedclusters", "-n", e.namespace}, "yes"},
		{[]string{"update", "deployments", "--subresource=scale", "-n", e.hcpNamespace}, "yes"},
		{[]string{"update", "deployments", "-n", e.hcpNamespace}, "no"},
		{[]string{"delete", "pods", "-n", e.hcpNamespace}, "no"},
		{[]string{"update", "hostedclusters", "-n", e.namespace}, "no"},
		{[]string{"list", "secrets", "-n", e.hcpNamespace}, "no"},
		{[]string{"get", "secrets", "-n", "kube-system"}, "no"},
		{[]string{"create", "cronjobs", "-n", e.namespace}, "no"},
	} {
		cmd := exec.Command(kubectl, append([]string{"auth", "can-i", "--as", user}, tt.args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+e.vars["KUBECONFIG"])
		out, _ := cmd.CombinedOutput()
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("kubectl auth can-i %v as the ServiceAccount: %q, want %q", tt.args, got, tt.want)
		}
	}
}

// rulesOf turns ruleSet lines back into rules, to merge two sets.
func rulesOf(lines []string) []rbacv1.PolicyRule {
	var rules []rbacv1.PolicyRule
	for _, l := range lines {
		f := strings.Split(l, " ")
		r := rbacv1.PolicyRule{APIGroups: []string{f[0]}, Resources: []string{f[1]}, Verbs: []string{f[3]}}
		if f[2] != "*" {
			r.ResourceNames = []string{f[2]}
		}
		rules = append(rules, r)
	}
	return rules
}

// TestScheduleRunsForReal applies a schedule with the image `make image`
// built and with `backup --prune --keep-last 1` passed through, starts two
// Jobs from its CronJob one after the other as `kubectl create job --from`
// does, and checks with the aws CLI and etcdutl that the pod backed up the
// cluster and that the second run pruned the first run's backup; then that
// --list reports the run.
func TestScheduleRunsForReal(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	ctx := context.Background()
	env.deleteHcpsnapObjects(t)
	t.Cleanup(func() { env.deleteHcpsnapObjects(t) })
	env.createS3Secret(t, env.namespace)
	name := schedule.DefaultName(schedule.Target{Namespace: env.namespace, Cluster: env.cluster})
	state := t.TempDir()
	prefix := fmt.Sprintf("scheduled-%d", time.Now().Unix())

	args := env.scheduleArgs(image, "--prefix", prefix, "--prune", "--keep-last", "1", "--apply")
	if res := env.hcpsnap(t, state, args...); res.code != 0 {
		t.Fatalf("schedule --apply: exit %d: %s", res.code, res.stderr)
	}
	kubectl := filepath.Join(env.vars["LOCALENV_BIN_DIR"], "kubectl")
	runJob := func(job string) {
		t.Helper()
		cmd := exec.Command(kubectl, "create", "job", job, "--from=cronjob/"+name, "-n", env.namespace)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.vars["KUBECONFIG"])
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl create job --from: %v: %s", err, out)
		}
		deadline := time.Now().Add(5 * time.Minute)
		var result schedule.Result
		for result == "" && time.Now().Before(deadline) {
			time.Sleep(time.Second)
			j, err := env.kube.BatchV1().Jobs(env.namespace).Get(ctx, job, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range j.Status.Conditions {
				if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
					result = schedule.Result(c.Type)
				}
			}
		}
		if result != schedule.ResultComplete {
			t.Fatalf("Job %s ended %q, want Complete; its pods:\n%s", job, result, env.podReport(t, job))
		}
	}
	// The bucket as the aws CLI sees it.
	aws := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("aws", append([]string{"--endpoint-url", env.vars["AWS_ENDPOINT_URL_S3"]}, args...)...)
		cmd.Env = os.Environ()
		for k, v := range env.vars {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("aws %v: %v", args, err)
		}
		return string(out)
	}
	listPrefix := func() (keys, manifests []string) {
		t.Helper()
		out := aws("s3api", "list-objects-v2", "--bucket", env.bucket, "--prefix", prefix+"/")
		var listing struct {
			Contents []struct{ Key string }
		}
		if strings.TrimSpace(out) != "" {
			if err := json.Unmarshal([]byte(out), &listing); err != nil {
				t.Fatalf("aws s3api list-objects-v2: %v: %q", err, out)
			}
		}
		for _, o := range listing.Contents {
			keys = append(keys, o.Key)
			if strings.HasSuffix(o.Key, "/manifest.json") {
				manifests = append(manifests, o.Key)
			}
		}
		return keys, manifests
	}

	first, second := name+"-1", name+"-2"
	runJob(first)
	_, manifests := listPrefix()
	if len(manifests) != 1 {
		t.Fatalf("after the first run: manifests %v, want one", manifests)
	}
	firstManifest := manifests[0]
	// Backups are named by the second they are taken in.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	runJob(second)
	keys, manifests := listPrefix()
	if len(manifests) != 1 || manifests[0] == firstManifest {
		t.Fatalf("after the second run with --keep-last 1: manifests %v, want only a new one (the first was %s)", manifests, firstManifest)
	}
	manifestKey := manifests[0]
	backupDir := strings.TrimSuffix(manifestKey, "manifest.json")
	for _, k := range keys {
		if !strings.HasPrefix(k, backupDir) {
			t.Errorf("%s is left of a pruned backup", k)
		}
	}

	dir := t.TempDir()
	aws("s3", "cp", "s3://"+env.bucket+"/"+manifestKey, filepath.Join(dir, "manifest.json"))
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Cluster != env.cluster || !m.Online {
		t.Errorf("manifest of %s/%s, online %v", m.Namespace, m.Cluster, m.Online)
	}
	aws("s3", "cp", "s3://"+env.bucket+"/"+m.Snapshot.Key, filepath.Join(dir, "snapshot.db"))
	out, err := exec.Command(env.vars["ETCDUTL"], "snapshot", "status", filepath.Join(dir, "snapshot.db"), "-w", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v: %s", err, out)
	}
	var st struct {
		Revision int64 `json:"revision"`
		TotalKey int64 `json:"totalKey"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	if st.Revision != m.Etcd.Revision || st.TotalKey < 100 {
		t.Errorf("etcdutl: revision %d with %d keys; manifest says revision %d", st.Revision, st.TotalKey, m.Etcd.Revision)
	}

	// The second pod's output: JSON lines only (logs and results), the
	// summary naming the manifest found above.
	pods, err := env.kube.CoreV1().Pods(env.namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + second})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of Job %s: %d, %v", second, len(pods.Items), err)
	}
	pod := pods.Items[0]
	if pod.Spec.ServiceAccountName != name || pod.Spec.Containers[0].Image != image {
		t.Errorf("pod ran as %s with image %s", pod.Spec.ServiceAccountName, pod.Spec.Containers[0].Image)
	}
	logs, events := env.jobEvents(t, ctx, pod.Name)
	var sawSummary bool
	for _, ev := range events {
		if ev.fields["message_type"] == "summary" {
			sawSummary = ev.fields["manifest"] == "s3://"+env.bucket+"/"+manifestKey
		}
	}
	if !sawSummary {
		t.Errorf("no summary naming s3://%s/%s in the job's output:\n%s", env.bucket, manifestKey, logs)
	}

	res := env.hcpsnap(t, state, "-o", "json", "schedule", "--list")
	var ls schedule.Status
	if err := json.Unmarshal([]byte(strings.TrimSpace(res.stdout)), &ls); err != nil || ls.LastResult != schedule.ResultComplete || ls.LastJob != second {
		t.Errorf("--list after the runs: %+v %v\n%s", ls, err, res.stderr)
	}
}

// podReport describes the pods of a Job, for a failure message.
func (e *testEnv) podReport(t *testing.T, job string) string {
	pods, err := e.kube.CoreV1().Pods(e.namespace).List(context.Background(), metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "%s: %s %s\n", p.Name, p.Status.Phase, p.Status.Message)
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, "  %s: %+v\n", cs.Name, cs.State)
		}
		logs, err := e.kube.CoreV1().Pods(e.namespace).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(context.Background())
		if err == nil {
			fmt.Fprintf(&b, "  logs:\n%s\n", logs)
		}
	}
	return b.String()
}

// jobEvent is one line a job's hcpsnap wrote: the line and its fields.
type jobEvent struct {
	line   string
	fields map[string]any
}

// jobEvents reads the logs of a job's pod, adds them to the secret scan,
// and returns them and their lines, each of which must be a JSON object
// (the job runs hcpsnap with -o json --log-format json).
func (e *testEnv) jobEvents(t *testing.T, ctx context.Context, pod string) (string, []jobEvent) {
	t.Helper()
	raw, err := e.kube.CoreV1().Pods(e.namespace).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("logs of %s: %v", pod, err)
	}
	logs := string(raw)
	record(logs) // the job's hcpsnap output joins the secret scan
	var events []jobEvent
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Errorf("the job wrote a line that is not JSON: %q", line)
			continue
		}
		events = append(events, jobEvent{line: line, fields: ev})
	}
	return logs, events
}
