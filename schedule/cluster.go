package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// ErrNotOwned is returned (wrapped) when an object a schedule would write or
// delete exists without the schedule's labels: someone else's object of the
// same name, which hcpsnap leaves alone.
var ErrNotOwned = errors.New("not managed by this schedule")

// Ref names one object of a schedule, as output shows it.
type Ref struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String is Kind/namespace/name, or Kind/name for a cluster-scoped object.
func (r Ref) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// resource is the handful of calls Apply and Delete make on one object,
// whatever its kind.
type resource struct {
	ref   Ref
	get   func(ctx context.Context) (metav1.Object, error)
	patch func(ctx context.Context, data []byte, opts metav1.PatchOptions) error
	del   func(ctx context.Context, opts metav1.DeleteOptions) error
}

func resourceFor(kube kubernetes.Interface, obj metav1.Object, kind string) resource {
	ns, name := obj.GetNamespace(), obj.GetName()
	r := resource{ref: Ref{Kind: kind, Namespace: ns, Name: name}}
	apply := types.ApplyPatchType
	switch kind {
	case "ClusterRole":
		c := kube.RbacV1().ClusterRoles()
		r.get = func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, name, metav1.GetOptions{}) }
		r.patch = func(ctx context.Context, d []byte, o metav1.PatchOptions) error {
			_, err := c.Patch(ctx, name, apply, d, o)
			return err
		}
		r.del = func(ctx context.Context, o metav1.DeleteOptions) error { return c.Delete(ctx, name, o) }
	case "ClusterRoleBinding":
		c := kube.RbacV1().ClusterRoleBindings()
		r.get = func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, name, metav1.GetOptions{}) }
		r.patch = func(ctx context.Context, d []byte, o metav1.PatchOptions) error {
			_, err := c.Patch(ctx, name, apply, d, o)
			return err
		}
		r.del = func(ctx context.Context, o metav1.DeleteOptions) error { return c.Delete(ctx, name, o) }
	case "RoleBinding":
		c := kube.RbacV1().RoleBindings(ns)
		r.get = func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, name, metav1.GetOptions{}) }
		r.patch = func(ctx context.Context, d []byte, o metav1.PatchOptions) error {
			_, err := c.Patch(ctx, name, apply, d, o)
			return err
		}
		r.del = func(ctx context.Context, o metav1.DeleteOptions) error { return c.Delete(ctx, name, o) }
	case "ServiceAccount":
		c := kube.CoreV1().ServiceAccounts(ns)
		r.get = func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, name, metav1.GetOptions{}) }
		r.patch = func(ctx context.Context, d []byte, o metav1.PatchOptions) error {
			_, err := c.Patch(ctx, name, apply, d, o)
			return err
		}
		r.del = func(ctx context.Context, o metav1.DeleteOptions) error { return c.Delete(ctx, name, o) }
	case "CronJob":
		c := kube.BatchV1().CronJobs(ns)
		r.get = func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, name, metav1.GetOptions{}) }
		r.patch = func(ctx context.Context, d []byte, o metav1.PatchOptions) error {
			_, err := c.Patch(ctx, name, apply, d, o)
			return err
		}
		r.del = func(ctx context.Context, o metav1.DeleteOptions) error { return c.Delete(ctx, name, o) }
	}
	return r
}

func kindOf(obj runtime.Object) string {
	switch obj.(type) {
	case *rbacv1.ClusterRole:
		return "ClusterRole"
	case *rbacv1.ClusterRoleBinding:
		return "ClusterRoleBinding"
	case *rbacv1.RoleBinding:
		return "RoleBinding"
	case *corev1.ServiceAccount:
		return "ServiceAccount"
	case *batchv1.CronJob:
		return "CronJob"
	}
	return fmt.Sprintf("%T", obj)
}

// Apply server-side applies the schedule's objects in order, as field
// manager hcpsnap. It first reads every one of them and refuses, before the
// first write, when one exists without the schedule's labels: it belongs to
// someone else. Force (taking fields over from another manager, such as a
// hand edit) is used only on objects that already carry the labels. With
// dryRun, the API server validates each object and persists nothing.
func Apply(ctx context.Context, kube kubernetes.Interface, o *Objects, namespace, name string, dryRun bool) ([]Ref, error) {
	type step struct {
		res  resource
		data []byte
		own  bool
	}
	var plan []step
	for _, obj := range o.List() {
		m := obj.(metav1.Object)
		res := resourceFor(kube, m, kindOf(obj))
		cur, err := res.get(ctx)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read %s: %w", res.ref, err)
		}
		if exists && !OwnedBy(cur.GetLabels(), namespace, name) {
			return nil, fmt.Errorf("%s exists and is %w %s/%s (no %s=%s, %s=%s labels): rename the schedule with --name, or remove that object yourself",
				res.ref, ErrNotOwned, namespace, name, LabelManagedBy, ManagedBy, LabelSchedule, name)
		}
		u, err := ToUnstructured(obj)
		if err != nil {
			return nil, err
		}
		data, err := json.Marshal(u)
		if err != nil {
			return nil, err
		}
		plan = append(plan, step{res: res, data: data, own: exists})
	}
	var done []Ref
	for _, st := range plan {
		opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &st.own}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		if err := st.res.patch(ctx, st.data, opts); err != nil {
			return done, fmt.Errorf("apply %s: %w", st.res.ref, err)
		}
		done = append(done, st.res.ref)
	}
	return done, nil
}

// Delete removes the objects of the schedule namespace/name: those that carry
// its labels, found by label wherever they are. Before it deletes anything
// it refuses when an object of a name the schedule uses exists without the
// labels (someone else's, left alone), when nothing carries them, and when
// a backup of the schedule is running (its pod needs the permissions to
// undo its changes).
func Delete(ctx context.Context, kube kubernetes.Interface, namespace, name string) ([]Ref, error) {
	sel := metav1.ListOptions{LabelSelector: LabelSelector(namespace, name)}
	rbacName := RBACName(namespace, name)
	// The names the schedule would use, checked for a stranger first.
	for _, r := range []resource{
		resourceFor(kube, &metav1.ObjectMeta{Namespace: namespace, Name: name}, "CronJob"),
		resourceFor(kube, &metav1.ObjectMeta{Namespace: namespace, Name: name}, "ServiceAccount"),
		resourceFor(kube, &metav1.ObjectMeta{Name: rbacName}, "ClusterRole"),
		resourceFor(kube, &metav1.ObjectMeta{Name: rbacName}, "ClusterRoleBinding"),
	} {
		cur, err := r.get(ctx)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", r.ref, err)
		}
		if !OwnedBy(cur.GetLabels(), namespace, name) {
			return nil, fmt.Errorf("%s is %w %s/%s (it lacks its labels): not deleting anything; remove it yourself if it is yours", r.ref, ErrNotOwned, namespace, name)
		}
	}

	type victim struct {
		res resource
		uid types.UID
	}
	var victims []victim
	add := func(kind string, m metav1.Object) {
		victims = append(victims, victim{res: resourceFor(kube, m, kind), uid: m.GetUID()})
	}
	cjs, err := kube.BatchV1().CronJobs(namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list CronJobs in %s: %w", namespace, err)
	}
	for i := range cjs.Items {
		cj := &cjs.Items[i]
		if len(cj.Status.Active) > 0 {
			return nil, fmt.Errorf("CronJob %s/%s has a backup running (Job %s): wait until it ends, then delete the schedule", namespace, cj.Name, cj.Status.Active[0].Name)
		}
		add("CronJob", cj)
	}
	rbs, err := kube.RbacV1().RoleBindings(metav1.NamespaceAll).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list RoleBindings: %w", err)
	}
	for i := range rbs.Items {
		add("RoleBinding", &rbs.Items[i])
	}
	crbs, err := kube.RbacV1().ClusterRoleBindings().List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list ClusterRoleBindings: %w", err)
	}
	for i := range crbs.Items {
		add("ClusterRoleBinding", &crbs.Items[i])
	}
	sas, err := kube.CoreV1().ServiceAccounts(namespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list ServiceAccounts in %s: %w", namespace, err)
	}
	for i := range sas.Items {
		add("ServiceAccount", &sas.Items[i])
	}
	crs, err := kube.RbacV1().ClusterRoles().List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("list ClusterRoles: %w", err)
	}
	for i := range crs.Items {
		add("ClusterRole", &crs.Items[i])
	}
	if len(victims) == 0 {
		return nil, fmt.Errorf("%w: no object in the cluster carries %s", ErrNoSchedule, LabelSelector(namespace, name))
	}
	var done []Ref
	for _, v := range victims {
		// The UID precondition deletes the object that was read, never one
		// made in its place since; background propagation takes the
		// CronJob's finished Jobs and their pods along.
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &v.uid},
			PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}
		if err := v.res.del(ctx, opts); err != nil && !apierrors.IsNotFound(err) {
			return done, fmt.Errorf("delete %s: %w", v.res.ref, err)
		}
		done = append(done, v.res.ref)
	}
	return done, nil
}

// ErrNoSchedule is returned (wrapped) when no object carries a schedule's
// labels.
var ErrNoSchedule = errors.New("no such schedule")

// Result is the outcome of a schedule's newest Job.
type Result string

// The results --list shows.
const (
	ResultNone     Result = "-"
	ResultRunning  Result = "Running"
	ResultComplete Result = "Complete"
	ResultFailed   Result = "Failed"
)

// Status is what --list shows of one schedule.
type Status struct {
	Namespace      string     `json:"namespace"`
	Name           string     `json:"name"`
	Target         string     `json:"target"`
	Schedule       string     `json:"schedule"`
	TimeZone       string     `json:"timeZone"`
	Suspended      bool       `json:"suspended"`
	LastSchedule   *time.Time `json:"lastScheduleTime"`
	LastJob        string     `json:"lastJob,omitempty"`
	LastResult     Result     `json:"lastResult"`
	LastSuccessful *time.Time `json:"lastSuccessfulTime"`
	// NextRun is nil when the schedule is suspended or cannot be read.
	NextRun *time.Time `json:"nextRun"`
	// Problem says why NextRun could not be computed.
	Problem string `json:"problem,omitempty"`
}

// List returns the status of every schedule in namespace (every namespace
// when it is empty), sorted by namespace and name: the CronJobs managed by
// hcpsnap, each with its newest Job's result and its next run after now.
func List(ctx context.Context, kube kubernetes.Interface, namespace string, now time.Time) ([]Status, error) {
	managed := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedBy + "," + LabelSchedule}
	cjs, err := kube.BatchV1().CronJobs(namespace).List(ctx, managed)
	if err != nil {
		return nil, fmt.Errorf("list CronJobs: %w", err)
	}
	jobs, err := kube.BatchV1().Jobs(namespace).List(ctx, managed)
	if err != nil {
		return nil, fmt.Errorf("list Jobs: %w", err)
	}
	newest := map[types.UID]*batchv1.Job{}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		for _, ref := range j.OwnerReferences {
			if ref.Kind != "CronJob" || ref.Controller == nil || !*ref.Controller {
				continue
			}
			if cur := newest[ref.UID]; cur == nil || newer(j, cur) {
				newest[ref.UID] = j
			}
		}
	}
	var out []Status
	for i := range cjs.Items {
		cj := &cjs.Items[i]
		if !OwnedBy(cj.Labels, cj.Namespace, cj.Labels[LabelSchedule]) {
			continue
		}
		st := Status{
			Namespace: cj.Namespace, Name: cj.Name, Target: cj.Annotations[AnnotationTarget],
			Schedule: cj.Spec.Schedule, Suspended: cj.Spec.Suspend != nil && *cj.Spec.Suspend,
			LastResult: ResultNone,
		}
		if cj.Spec.TimeZone != nil {
			st.TimeZone = *cj.Spec.TimeZone
		}
		if t := cj.Status.LastScheduleTime; t != nil {
			st.LastSchedule = ptr.To(t.UTC())
		}
		if t := cj.Status.LastSuccessfulTime; t != nil {
			st.LastSuccessful = ptr.To(t.UTC())
		}
		if j := newest[cj.UID]; j != nil {
			st.LastJob, st.LastResult = j.Name, jobResult(j)
		}
		if !st.Suspended {
			tz := st.TimeZone
			if tz == "" {
				// The controller's own zone, which we cannot see; UTC is
				// what nearly every control plane runs in, and we say so.
				tz = "UTC"
				st.Problem = "no time zone: next run assumes the controller runs in UTC"
			}
			if next, err := NextRun(st.Schedule, tz, now); err != nil {
				st.Problem = err.Error()
			} else {
				st.NextRun = ptr.To(next.UTC())
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func newer(a, b *batchv1.Job) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return strings.Compare(a.Name, b.Name) > 0
}

// jobResult reads a Job's outcome from its conditions, as kubectl does.
func jobResult(j *batchv1.Job) Result {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return ResultComplete
		case batchv1.JobFailed:
			return ResultFailed
		}
	}
	return ResultRunning
}
