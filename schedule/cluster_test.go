package schedule

import (
	"context"
	"errors"
	"slices"
	"sort"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// writes lists the actions of a fake that change something, as
// "verb kind namespace/name".
func writes(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		switch a := a.(type) {
		case k8stesting.PatchAction:
			out = append(out, "patch "+a.GetResource().Resource+" "+a.GetNamespace()+"/"+a.GetName())
		case k8stesting.DeleteAction:
			out = append(out, "delete "+a.GetResource().Resource+" "+a.GetNamespace()+"/"+a.GetName())
		case k8stesting.CreateAction:
			out = append(out, "create "+a.GetResource().Resource+" "+a.GetNamespace())
		case k8stesting.UpdateAction:
			out = append(out, "update "+a.GetResource().Resource+" "+a.GetNamespace())
		}
	}
	return out
}

func TestApply(t *testing.T) {
	ctx := context.Background()
	s := testSpec(t)
	o := render(t, s)
	cs := fake.NewClientset()
	done, err := Apply(ctx, cs, o, "clusters", s.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != len(o.List()) {
		t.Fatalf("applied %v", done)
	}
	want := []string{
		"patch clusterroles /" + o.ClusterRole.Name,
		"patch serviceaccounts clusters/" + s.Name,
		"patch rolebindings clusters/" + o.ClusterRole.Name,
		"patch rolebindings clusters-example/" + o.ClusterRole.Name,
		"patch cronjobs clusters/" + s.Name,
	}
	if got := writes(cs); !slices.Equal(got, want) {
		t.Fatalf("writes %v, want %v", got, want)
	}
	for _, a := range cs.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok && p.GetPatchType() != types.ApplyPatchType {
			t.Errorf("%s is a %s patch, not server-side apply", p.GetName(), p.GetPatchType())
		}
	}
	cj, err := cs.BatchV1().CronJobs("clusters").Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cj.Spec.Schedule != s.Cron || !OwnedBy(cj.Labels, "clusters", s.Name) {
		t.Errorf("applied CronJob %+v", cj.ObjectMeta)
	}

	// Applied again: the objects are the schedule's now, so it converges.
	if _, err := Apply(ctx, cs, o, "clusters", s.Name, false); err != nil {
		t.Fatalf("second apply: %v", err)
	}
}

// TestApplyRefusesAStranger checks that a same-named object without the
// labels stops the apply before its first write.
func TestApplyRefusesAStranger(t *testing.T) {
	s := testSpec(t)
	o := render(t, s)
	for _, stranger := range []runtime.Object{
		&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: s.Name}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: s.Name, Labels: map[string]string{LabelManagedBy: ManagedBy}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters-example", Name: o.ClusterRole.Name,
			Labels: Labels("elsewhere", s.Name)}},
	} {
		cs := fake.NewClientset(stranger)
		_, err := Apply(context.Background(), cs, o, "clusters", s.Name, false)
		if !errors.Is(err, ErrNotOwned) {
			t.Errorf("%T: Apply = %v, want ErrNotOwned", stranger, err)
		}
		if w := writes(cs); len(w) > 0 {
			t.Errorf("%T: wrote %v before refusing", stranger, w)
		}
	}
}

func TestApplyDryRun(t *testing.T) {
	s := testSpec(t)
	cs := fake.NewClientset()
	var dryRuns int
	cs.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		// The fake ignores dryRun, so answer here as the server would:
		// validated, nothing stored.
		if slices.Equal(a.(k8stesting.PatchActionImpl).PatchOptions.DryRun, []string{metav1.DryRunAll}) {
			dryRuns++
		}
		return true, nil, nil
	})
	if _, err := Apply(context.Background(), cs, render(t, s), "clusters", s.Name, true); err != nil {
		t.Fatal(err)
	}
	if dryRuns != 5 {
		t.Errorf("%d of 5 patches were dry runs", dryRuns)
	}
}

func owned(namespace, name string) map[string]string { return Labels(namespace, name) }

func TestDelete(t *testing.T) {
	const ns, name = "clusters", "hcpsnap-clusters-example"
	rbac := RBACName(ns, name)
	objs := []runtime.Object{
		// The schedule's objects.
		&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: owned(ns, name), UID: "cj"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: owned(ns, name), UID: "sa"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: rbac, Labels: owned(ns, name)}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns + "-example", Name: rbac, Labels: owned(ns, name)}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: rbac, Labels: owned(ns, name)}},
		// Another schedule's, of the same name in another job namespace.
		&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: name, Labels: owned("other", name)}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: RBACName("other", name), Labels: owned("other", name)}},
		// Same-named objects nobody labelled, elsewhere.
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: name}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "third", Name: rbac}},
		// Half-labelled: managed by hcpsnap, another schedule name.
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{LabelManagedBy: ManagedBy, LabelSchedule: "x", LabelScheduleNamespace: ns}}},
	}
	cs := fake.NewClientset(objs...)
	done, err := Delete(context.Background(), cs, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range done {
		got = append(got, r.String())
	}
	want := []string{
		"CronJob/clusters/" + name,
		"RoleBinding/clusters/" + rbac,
		"RoleBinding/clusters-example/" + rbac,
		"ServiceAccount/clusters/" + name,
		"ClusterRole/" + rbac,
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("deleted %v, want %v", got, want)
	}
	var deletes []string
	for _, w := range writes(cs) {
		deletes = append(deletes, w)
	}
	if len(deletes) != len(want) {
		t.Errorf("writes %v, want only the %d deletes", deletes, len(want))
	}
	// Everything else is still there.
	ctx := context.Background()
	if _, err := cs.BatchV1().CronJobs("other").Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Errorf("the other namespace's schedule was touched: %v", err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("other").Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Errorf("an unlabelled ServiceAccount was touched: %v", err)
	}
	if _, err := cs.RbacV1().RoleBindings("third").Get(ctx, rbac, metav1.GetOptions{}); err != nil {
		t.Errorf("an unlabelled RoleBinding was touched: %v", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "x", metav1.GetOptions{}); err != nil {
		t.Errorf("another schedule's ClusterRoleBinding was touched: %v", err)
	}

	// Nothing left: a second delete says so.
	if _, err := Delete(ctx, cs, ns, name); !errors.Is(err, ErrNoSchedule) {
		t.Errorf("second Delete = %v, want ErrNoSchedule", err)
	}
}

func TestDeleteRefuses(t *testing.T) {
	const ns, name = "clusters", "nightly"
	tests := map[string][]runtime.Object{
		"an unlabelled CronJob of the schedule's name": {
			&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "x", Labels: owned(ns, name)}},
		},
		"an unlabelled ClusterRole of the schedule's RBAC name": {
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: RBACName(ns, name)}},
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: owned(ns, name)}},
		},
		"a running backup": {
			&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: owned(ns, name)},
				Status: batchv1.CronJobStatus{Active: []corev1.ObjectReference{{Name: name + "-29000000"}}}},
		},
		"nothing": {},
	}
	for what, objs := range tests {
		t.Run(what, func(t *testing.T) {
			cs := fake.NewClientset(objs...)
			if _, err := Delete(context.Background(), cs, ns, name); err == nil {
				t.Fatal("Delete went ahead")
			}
			if w := writes(cs); len(w) > 0 {
				t.Fatalf("refused after writing %v", w)
			}
		})
	}
}

func TestList(t *testing.T) {
	now := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	ts := func(h int) metav1.Time { return metav1.NewTime(now.Add(time.Duration(h) * time.Hour)) }
	cronJob := func(ns, name, cron string, tz *string, suspend bool, uid types.UID) *batchv1.CronJob {
		cj := &batchv1.CronJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid, Labels: owned(ns, name),
				Annotations: map[string]string{AnnotationTarget: "cluster clusters/" + name}},
			Spec: batchv1.CronJobSpec{Schedule: cron, TimeZone: tz, Suspend: &suspend},
		}
		return cj
	}
	job := func(ns, name string, owner types.UID, created int, cond batchv1.JobConditionType) *batchv1.Job {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: ts(created),
			Labels:          owned(ns, "x"),
			OwnerReferences: []metav1.OwnerReference{{Kind: "CronJob", Name: "x", UID: owner, Controller: ptr.To(true)}}}}
		if cond != "" {
			j.Status.Conditions = []batchv1.JobCondition{{Type: cond, Status: corev1.ConditionTrue}}
		}
		return j
	}
	daily := cronJob("clusters", "daily", "0 2 * * *", ptr.To("Europe/Paris"), false, "u1")
	daily.Status.LastScheduleTime = ptr.To(ts(-11))
	daily.Status.LastSuccessfulTime = ptr.To(ts(-35))
	objs := []runtime.Object{
		daily,
		job("clusters", "daily-1", "u1", -35, batchv1.JobComplete),
		job("clusters", "daily-2", "u1", -11, batchv1.JobFailed),
		cronJob("clusters", "paused", "@hourly", ptr.To("UTC"), true, "u2"),
		cronJob("team", "hourly", "30 * * * *", nil, false, "u3"),
		job("team", "hourly-1", "u3", -1, ""),
		// Not hcpsnap's.
		&batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: "clusters", Name: "someone-elses"}, Spec: batchv1.CronJobSpec{Schedule: "* * * * *"}},
	}
	cs := fake.NewClientset(objs...)
	list, err := List(context.Background(), cs, "", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("%d schedules: %+v", len(list), list)
	}
	d, p, h := list[0], list[1], list[2]
	if d.Name != "daily" || p.Name != "paused" || h.Name != "hourly" {
		t.Fatalf("order %s, %s, %s", d.Name, p.Name, h.Name)
	}
	if d.LastResult != ResultFailed || d.LastJob != "daily-2" || !d.LastSchedule.Equal(ts(-11).Time) || !d.LastSuccessful.Equal(ts(-35).Time) {
		t.Errorf("daily: %+v", d)
	}
	// 02:00 in Paris in January is 01:00 UTC, tomorrow.
	if want := time.Date(2026, 1, 16, 1, 0, 0, 0, time.UTC); d.NextRun == nil || !d.NextRun.Equal(want) {
		t.Errorf("daily next run %v, want %s", d.NextRun, want)
	}
	if !p.Suspended || p.NextRun != nil || p.LastResult != ResultNone || p.LastSchedule != nil {
		t.Errorf("paused: %+v", p)
	}
	if h.LastResult != ResultRunning || h.TimeZone != "" || h.Problem == "" {
		t.Errorf("hourly: %+v", h)
	}
	if want := time.Date(2026, 1, 15, 12, 30, 0, 0, time.UTC); h.NextRun == nil || !h.NextRun.Equal(want) {
		t.Errorf("hourly next run %v, want %s", h.NextRun, want)
	}

	// One namespace only.
	list, err = List(context.Background(), cs, "team", now)
	if err != nil || len(list) != 1 || list[0].Name != "hourly" {
		t.Errorf("List(team) = %+v, %v", list, err)
	}
}

// TestObjectsWithoutRBAC: a schedule without a ClusterRole or bindings (a
// verify schedule has none) lists, applies and dry-runs only the objects it
// has, and an empty Objects lists nothing rather than typed nils.
func TestObjectsWithoutRBAC(t *testing.T) {
	full := render(t, testSpec(t))
	tests := []struct {
		name string
		objs *Objects
		want []string
	}{
		{"empty", &Objects{}, nil},
		{"ServiceAccount and CronJob", &Objects{ServiceAccount: full.ServiceAccount, CronJob: full.CronJob}, []string{"ServiceAccount", "CronJob"}},
		{"a nil RoleBinding", &Objects{ServiceAccount: full.ServiceAccount, RoleBindings: []*rbacv1.RoleBinding{nil}, CronJob: full.CronJob},
			[]string{"ServiceAccount", "CronJob"}},
		{"CronJob only", &Objects{CronJob: full.CronJob}, []string{"CronJob"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := kindsOf(tt.objs); !slices.Equal(got, tt.want) {
				t.Fatalf("List kinds %v, want %v", got, tt.want)
			}
			for _, dry := range []bool{true, false} {
				cs := fake.NewClientset()
				done, err := Apply(context.Background(), cs, tt.objs, "clusters", full.CronJob.Name, dry)
				if err != nil {
					t.Fatalf("Apply (dry run %v): %v", dry, err)
				}
				if len(done) != len(tt.want) {
					t.Errorf("Apply (dry run %v) applied %v, want %d objects", dry, done, len(tt.want))
				}
			}
		})
	}
}
