package operator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/log"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// DesiredReplicasAnnotation is the HostedControlPlane annotation that holds the
// stand-in's configuration: the Deployments it keeps at a replica count, as
// "kube-apiserver=3,openshift-apiserver=3,openshift-oauth-apiserver=3". The
// real control-plane operator derives these counts from the availability
// policy; the local environment writes them down instead.
const DesiredReplicasAnnotation = "localenv.hcpsnap.io/desired-replicas"

// ReconciliationActiveCondition is the HostedCluster condition type through
// which HyperShift reports whether reconciliation is paused.
const ReconciliationActiveCondition = "ReconciliationActive"

// Reasons of the ReconciliationActive condition, spelled as HyperShift spells them.
const (
	ReasonAsExpected           = "AsExpected"
	ReasonReconciliationPaused = "ReconciliationPaused"
)

// DefaultInterval is how often Run reconciles when Config.Interval is zero.
const DefaultInterval = time.Second

// The resources the stand-in reads and writes. They are plain
// GroupVersionResources so that the operator needs no scheme and no typed
// HyperShift client.
var (
	HostedClusterResource      = schema.GroupVersionResource{Group: "hypershift.openshift.io", Version: "v1beta1", Resource: "hostedclusters"}
	HostedControlPlaneResource = schema.GroupVersionResource{Group: "hypershift.openshift.io", Version: "v1beta1", Resource: "hostedcontrolplanes"}
)

// Config configures Run.
type Config struct {
	// Kubeconfig is the path of the management cluster's kubeconfig; empty
	// means the standard loading rules (KUBECONFIG, ~/.kube/config).
	Kubeconfig string
	// Interval is the time between two reconciliations; DefaultInterval when zero.
	Interval time.Duration
	// Log receives one line per change and per error; nil discards them.
	Log *log.Logger
}

// Run reconciles every HostedCluster once per Interval until ctx is
// cancelled, and then returns nil. Errors of one pass are logged, not
// returned: like a controller, the stand-in retries on the next pass.
func Run(ctx context.Context, cfg Config) error {
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	loading.ExplicitPath = cfg.Kubeconfig
	restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, nil).ClientConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	r := newReconciler(dyn, kube, cfg.Log)
	interval := cfg.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	r.log.Info("operator stand-in running", "interval", interval)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if err := r.reconcileAll(ctx, time.Now()); err != nil && ctx.Err() == nil {
			r.log.Error("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// ParsePausedUntil decides, as HyperShift's ProcessPausedUntilField does,
// whether a HostedCluster with spec.pausedUntil = value is paused at now:
//
//   - nil (field absent): not paused;
//   - a value strconv.ParseBool accepts: that boolean;
//   - an RFC 3339 time: paused while now is before it, and remaining is the
//     time left;
//   - anything else: not paused, with an error, because HyperShift reports an
//     unparsable value and goes on reconciling.
func ParsePausedUntil(value *string, now time.Time) (paused bool, remaining time.Duration, err error) {
	if value == nil {
		return false, 0, nil
	}
	if b, err := strconv.ParseBool(*value); err == nil {
		return b, 0, nil
	}
	until, err := time.Parse(time.RFC3339, *value)
	if err != nil {
		return false, 0, fmt.Errorf("pausedUntil %q is neither a boolean nor an RFC3339 time: %w", *value, err)
	}
	if now.Before(until) {
		return true, until.Sub(now), nil
	}
	return false, 0, nil
}

// FormatDesiredReplicas renders replicas in the format of
// DesiredReplicasAnnotation, sorted by name so that the value is stable.
func FormatDesiredReplicas(replicas map[string]int32) string {
	names := make([]string, 0, len(replicas))
	for name := range replicas {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", name, replicas[name]))
	}
	return strings.Join(parts, ",")
}

// ParseDesiredReplicas reads a DesiredReplicasAnnotation value. Blank entries
// are ignored; a malformed entry is an error, so that a typo never scales a
// Deployment to a wrong count.
func ParseDesiredReplicas(value string) (map[string]int32, error) {
	out := map[string]int32{}
	for _, entry := range strings.Split(value, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, count, ok := strings.Cut(entry, "=")
		name = strings.TrimSpace(name)
		n, err := strconv.ParseInt(strings.TrimSpace(count), 10, 32)
		if !ok || name == "" || err != nil || n < 0 {
			return nil, fmt.Errorf("%s entry %q is not <deployment>=<replicas>", DesiredReplicasAnnotation, entry)
		}
		out[name] = int32(n)
	}
	return out, nil
}

// reconciler holds the clients of one stand-in.
type reconciler struct {
	dyn  dynamic.Interface
	kube kubernetes.Interface
	log  *log.Logger
}

func newReconciler(dyn dynamic.Interface, kube kubernetes.Interface, logger *log.Logger) *reconciler {
	if logger == nil {
		logger = log.New(io.Discard)
	}
	return &reconciler{dyn: dyn, kube: kube, log: logger.With("component", "operator")}
}

// reconcileAll reconciles every HostedCluster of every namespace; the error
// of one does not stop the others.
func (r *reconciler) reconcileAll(ctx context.Context, now time.Time) error {
	list, err := r.dyn.Resource(HostedClusterResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list hostedclusters: %w", err)
	}
	var errs []error
	for i := range list.Items {
		hc := &list.Items[i]
		if err := r.reconcile(ctx, hc, now); err != nil {
			errs = append(errs, fmt.Errorf("hostedcluster %s/%s: %w", hc.GetNamespace(), hc.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// reconcile handles one HostedCluster: condition, mirror, then replicas.
func (r *reconciler) reconcile(ctx context.Context, hc *unstructured.Unstructured, now time.Time) error {
	value, found, err := unstructured.NestedString(hc.Object, "spec", "pausedUntil")
	if err != nil {
		return fmt.Errorf("read spec.pausedUntil: %w", err)
	}
	var pausedUntil *string
	if found {
		pausedUntil = &value
	}
	paused, _, parseErr := ParsePausedUntil(pausedUntil, now)
	if parseErr != nil {
		r.log.Warn("reconciling anyway", "hostedcluster", hc.GetNamespace()+"/"+hc.GetName(), "err", parseErr)
	}

	var errs []error
	if err := r.setReconciliationActive(ctx, hc, pausedUntil, paused); err != nil {
		errs = append(errs, err)
	}
	hcpNamespace := hc.GetNamespace() + "-" + hc.GetName()
	hcp, err := r.dyn.Resource(HostedControlPlaneResource).Namespace(hcpNamespace).Get(ctx, hc.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// HyperShift creates the HostedControlPlane; the stand-in never does.
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("get hostedcontrolplane: %w", err))...)
	}
	if err := r.mirrorPausedUntil(ctx, hcp, pausedUntil); err != nil {
		errs = append(errs, err)
	}
	if !paused {
		if err := r.restoreReplicas(ctx, hcp); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mirrorPausedUntil makes the HostedControlPlane's spec.pausedUntil equal to
// the HostedCluster's, removing the field when the HostedCluster has none.
func (r *reconciler) mirrorPausedUntil(ctx context.Context, hcp *unstructured.Unstructured, want *string) error {
	have, found, err := unstructured.NestedString(hcp.Object, "spec", "pausedUntil")
	if err != nil {
		return fmt.Errorf("read hostedcontrolplane spec.pausedUntil: %w", err)
	}
	if (want == nil && !found) || (want != nil && found && *want == have) {
		return nil
	}
	// A JSON merge patch sets the field, or removes it with null.
	var patch []byte
	if want == nil {
		patch = []byte(`{"spec":{"pausedUntil":null}}`)
	} else {
		patch = []byte(fmt.Sprintf(`{"spec":{"pausedUntil":%s}}`, strconv.Quote(*want)))
	}
	if _, err := r.dyn.Resource(HostedControlPlaneResource).Namespace(hcp.GetNamespace()).
		Patch(ctx, hcp.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch hostedcontrolplane spec.pausedUntil: %w", err)
	}
	r.log.Info("mirrored pausedUntil", "hostedcontrolplane", hcp.GetNamespace()+"/"+hcp.GetName(), "pausedUntil", display(want))
	return nil
}

// restoreReplicas scales every Deployment named in the annotation back to its
// desired count. Deployments not named there are never touched.
func (r *reconciler) restoreReplicas(ctx context.Context, hcp *unstructured.Unstructured) error {
	value, ok := hcp.GetAnnotations()[DesiredReplicasAnnotation]
	if !ok {
		return nil
	}
	desired, err := ParseDesiredReplicas(value)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(desired))
	for name := range desired {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		if err := r.scaleTo(ctx, hcp.GetNamespace(), name, desired[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// scaleTo sets the replicas of one Deployment through the scale subresource.
// The update carries no resourceVersion, so it converges on the count without
// conflicting with the Deployment's own status updates.
func (r *reconciler) scaleTo(ctx context.Context, namespace, name string, replicas int32) error {
	deployments := r.kube.AppsV1().Deployments(namespace)
	d, err := deployments.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get deployment %s: %w", name, err)
	}
	current := int32(1) // the API server's default when spec.replicas is unset
	if d.Spec.Replicas != nil {
		current = *d.Spec.Replicas
	}
	if current == replicas {
		return nil
	}
	scale := &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       autoscalingv1.ScaleSpec{Replicas: replicas},
	}
	if _, err := deployments.UpdateScale(ctx, name, scale, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("scale deployment %s to %d: %w", name, replicas, err)
	}
	r.log.Info("restored replicas", "deployment", namespace+"/"+name, "from", current, "to", replicas)
	return nil
}

// setReconciliationActive reports the pause in the HostedCluster's status as
// HyperShift does, writing only when the condition changes.
func (r *reconciler) setReconciliationActive(ctx context.Context, hc *unstructured.Unstructured, pausedUntil *string, paused bool) error {
	cond := metav1.Condition{
		Type:               ReconciliationActiveCondition,
		Status:             metav1.ConditionTrue,
		Reason:             ReasonAsExpected,
		Message:            "Reconciliation active on resource",
		ObservedGeneration: hc.GetGeneration(),
	}
	if paused {
		cond.Status = metav1.ConditionFalse
		cond.Reason = ReasonReconciliationPaused
		cond.Message = "Reconciliation paused until: " + display(pausedUntil)
	}
	raw, _, err := unstructured.NestedSlice(hc.Object, "status", "conditions")
	if err != nil {
		return fmt.Errorf("read status.conditions: %w", err)
	}
	var conditions []metav1.Condition
	for _, item := range raw {
		m, ok := item.(map[string]interface{})
		if !ok {
			continue
		}
		var c metav1.Condition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &c); err != nil {
			return fmt.Errorf("read status.conditions: %w", err)
		}
		conditions = append(conditions, c)
	}
	if !meta.SetStatusCondition(&conditions, cond) {
		return nil
	}
	out := make([]interface{}, 0, len(conditions))
	for i := range conditions {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&conditions[i])
		if err != nil {
			return err
		}
		out = append(out, m)
	}
	updated := hc.DeepCopy()
	if err := unstructured.SetNestedSlice(updated.Object, out, "status", "conditions"); err != nil {
		return err
	}
	if _, err := r.dyn.Resource(HostedClusterResource).Namespace(hc.GetNamespace()).UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status condition %s: %w", ReconciliationActiveCondition, err)
	}
	return nil
}

func display(value *string) string {
	if value == nil {
		return "<absent>"
	}
	return *value
}
