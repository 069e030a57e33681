package management

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// The node labels of a master: OpenShift sets both on its control plane
// nodes (the second since 4.9); either makes a node a master here.
const (
	LabelNodeMaster       = "node-role.kubernetes.io/master"
	LabelNodeControlPlane = "node-role.kubernetes.io/control-plane"
)

// Errors of the cluster checks, wrapped with what was found.
var (
	// ErrNotOwned: a MachineConfig of the name exists without
	// app.kubernetes.io/managed-by=hcpsnap; hcpsnap leaves it alone.
	ErrNotOwned = errors.New("not managed by hcpsnap")
	// ErrNoNode: --host names no node of the cluster.
	ErrNoNode = errors.New("no such node")
	// ErrNotMaster: --host names a node that is not a master.
	ErrNotMaster = errors.New("not a master")
	// ErrNoMachineConfig: nothing to delete.
	ErrNoMachineConfig = errors.New("no such MachineConfig")
	// ErrNoMachineConfigAPI: the cluster does not serve MachineConfigs (it
	// is not OpenShift).
	ErrNoMachineConfigAPI = errors.New("the cluster does not serve MachineConfigs")
)

// CheckHost checks that host is a node of the cluster and a master.
func CheckHost(ctx context.Context, kube kubernetes.Interface, host string) error {
	node, err := kube.CoreV1().Nodes().Get(ctx, host, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: %w", host, ErrNoNode)
	}
	if err != nil {
		return fmt.Errorf("read node %s: %w", host, err)
	}
	_, master := node.Labels[LabelNodeMaster]
	_, controlPlane := node.Labels[LabelNodeControlPlane]
	if !master && !controlPlane {
		return fmt.Errorf("node %s is %w: it has neither label %s nor %s", host, ErrNotMaster, LabelNodeMaster, LabelNodeControlPlane)
	}
	return nil
}

// CheckAPI checks that the cluster serves MachineConfigs, so that a 404
// later means a missing object, not a missing API.
func CheckAPI(disc discovery.DiscoveryInterface) error {
	gv := MachineConfigGVR.GroupVersion().String()
	list, err := disc.ServerResourcesForGroupVersion(gv)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w (%s): is this an OpenShift cluster?", ErrNoMachineConfigAPI, gv)
	}
	if err != nil {
		return fmt.Errorf("discover %s: %w", gv, err)
	}
	for _, r := range list.APIResources {
		if r.Name == MachineConfigGVR.Resource {
			return nil
		}
	}
	return fmt.Errorf("%w (%s serves no %s): is this an OpenShift cluster?", ErrNoMachineConfigAPI, gv, MachineConfigGVR.Resource)
}

// MachineConfigs is the part of the dynamic client that Apply and Delete
// use: dyn.Resource(MachineConfigGVR).
type MachineConfigs interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions, subresources ...string) (*unstructured.Unstructured, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*unstructured.Unstructured, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions, subresources ...string) error
}

var _ MachineConfigs = dynamic.ResourceInterface(nil)

// Owned reports whether a MachineConfig's labels make it hcpsnap's.
func Owned(labels map[string]string) bool { return labels[LabelManagedBy] == ManagedBy }

// Outcome is what Apply did.
type Outcome string

// The outcomes of Apply.
const (
	Created    Outcome = "created"
	Configured Outcome = "configured"
	Unchanged  Outcome = "unchanged"
	// Validated: the server-side dry run passed, nothing was persisted.
	Validated Outcome = "validated"
)

// Apply server-side applies the MachineConfig as field manager hcpsnap. It
// refuses, before any write, a same-named MachineConfig that is not
// hcpsnap's. It always sends a server-side dry run first (the API server
// validates the object against the CRD's schema, persisting nothing), and
// stops there with dryRun. Force (taking fields over from another manager)
// is used only when the object already carries hcpsnap's label, and then
// the object's resourceVersion is a precondition, so that the label that
// was checked is the one that is overwritten.
func Apply(ctx context.Context, res MachineConfigs, mc *unstructured.Unstructured, dryRun bool) (Outcome, error) {
	name := mc.GetName()
	cur, err := res.Get(ctx, name, metav1.GetOptions{})
	exists := err == nil
	switch {
	case err != nil && !apierrors.IsNotFound(err):
		return "", fmt.Errorf("read MachineConfig %s: %w", name, err)
	case exists && !Owned(cur.GetLabels()):
		return "", fmt.Errorf("MachineConfig %s exists and is %w (no label %s=%s): choose another name with --name, or remove it yourself if it is yours",
			name, ErrNotOwned, LabelManagedBy, ManagedBy)
	}
	obj := mc.DeepCopy()
	if exists {
		obj.SetResourceVersion(cur.GetResourceVersion())
	}
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return "", err
	}
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &exists, DryRun: []string{metav1.DryRunAll}}
	if _, err := res.Patch(ctx, name, types.ApplyPatchType, data, opts); err != nil {
		return "", fmt.Errorf("server-side dry run of MachineConfig %s: %w", name, err)
	}
	if dryRun {
		return Validated, nil
	}
	opts.DryRun = nil
	out, err := res.Patch(ctx, name, types.ApplyPatchType, data, opts)
	if err != nil {
		return "", fmt.Errorf("apply MachineConfig %s (its server-side dry run passed): %w", name, err)
	}
	switch {
	case !exists:
		return Created, nil
	case out.GetResourceVersion() == cur.GetResourceVersion():
		return Unchanged, nil
	}
	return Configured, nil
}

// Delete removes the MachineConfig name when it is hcpsnap's, with its UID
// as a precondition: a same-named object created in between is left alone.
// With dryRun the API server only validates the deletion.
func Delete(ctx context.Context, res MachineConfigs, name string, dryRun bool) error {
	cur, err := res.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: %w", name, ErrNoMachineConfig)
	case err != nil:
		return fmt.Errorf("read MachineConfig %s: %w", name, err)
	case !Owned(cur.GetLabels()):
		return fmt.Errorf("MachineConfig %s is %w (no label %s=%s): not deleting it; remove it yourself if it is yours", name, ErrNotOwned, LabelManagedBy, ManagedBy)
	}
	uid := cur.GetUID()
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if err := res.Delete(ctx, name, opts); err != nil {
		return fmt.Errorf("delete MachineConfig %s: %w", name, err)
	}
	return nil
}
