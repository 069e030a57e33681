package nodeagent

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const (
	// leaseNamespace holds the node leases the node lifecycle controller watches.
	leaseNamespace = "kube-node-lease"
	// leaseDuration is the lease's validity; it is renewed every leaseRenew.
	leaseDuration = 40
	leaseRenew    = 10 * time.Second
	// statusEvery is how often the node status (the Ready condition's heartbeat) is posted.
	statusEvery = 30 * time.Second
	// kubeletVersion is what the node reports; the apiserver's version skew checks look at it.
	kubeletVersion = "v1.32.3"
)

// registerNode creates the Node, or takes over an existing one of the same name, and posts its status; it retries
// until the apiserver answers or ctx ends.
func (a *agent) registerNode(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := a.ensureNode(ctx)
		if err == nil {
			a.log.Info("node registered", "node", a.cfg.NodeName)
			return nil
		}
		a.log.Warn("register node", "node", a.cfg.NodeName, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("register node: %w", err)
		case <-time.After(time.Second << min(attempt, 3)):
		}
	}
}

func (a *agent) ensureNode(ctx context.Context) error {
	nodes := a.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err = nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: a.cfg.NodeName,
			Labels: map[string]string{
				corev1.LabelHostname:   a.cfg.NodeName,
				corev1.LabelOSStable:   runtime.GOOS,
				corev1.LabelArchStable: runtime.GOARCH,
				// A master, as OpenShift labels one (both labels since
				// 4.9): `hcpsnap schedule management --host` requires it.
				"node-role.kubernetes.io/master":        "",
				"node-role.kubernetes.io/control-plane": "",
			},
		}}, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	return a.postNodeStatus(ctx, node)
}

// postNodeStatus writes the node's status: Ready, addresses, kubelet endpoint, capacity.
func (a *agent) postNodeStatus(ctx context.Context, node *corev1.Node) error {
	port, err := listenPort(a.cfg.Listen)
	if err != nil {
		return err
	}
	updated := node.DeepCopy()
	updated.Status = nodeStatus(node.Status, port, time.Now())
	_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

// nodeStatus returns the status of a healthy node, keeping the transition times of unchanged conditions.
func nodeStatus(old corev1.NodeStatus, port int32, now time.Time) corev1.NodeStatus {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	heartbeat := metav1.NewTime(now.Truncate(time.Second))
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "hcpsnap node agent is posting ready status"},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID"},
	}
	for i := range conds {
		conds[i].LastHeartbeatTime, conds[i].LastTransitionTime = heartbeat, heartbeat
		for _, o := range old.Conditions {
			if o.Type == conds[i].Type && o.Status == conds[i].Status {
				conds[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	return corev1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources.DeepCopy(),
		Phase:       corev1.NodeRunning,
		Conditions:  conds,
		// Only an InternalIP: the apiserver prefers a Hostname address by default (--kubelet-preferred-address-types)
		// and the node's name does not resolve.
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: hostIP}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: port}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          kubeletVersion,
			KubeProxyVersion:        kubeletVersion,
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "hcpsnap://1",
			OSImage:                 "hcpsnap node agent",
		},
	}
}

func listenPort(listen string) (int32, error) {
	_, p, err := net.SplitHostPort(listen)
	if err != nil {
		return 0, err
	}
	port, err := strconv.ParseInt(p, 10, 32)
	if err != nil || port <= 0 {
		return 0, fmt.Errorf("listen %q: no port", listen)
	}
	return int32(port), nil
}

// heartbeat renews the node's Lease every leaseRenew and posts its status every statusEvery, so that the node
// lifecycle controller never taints the node and evicts its pods. A deleted Node is registered again.
func (a *agent) heartbeat(ctx context.Context) {
	lease := time.NewTicker(leaseRenew)
	defer lease.Stop()
	status := time.NewTicker(statusEvery)
	defer status.Stop()
	a.renewLease(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			a.renewLease(ctx)
		case <-status.C:
			if err := a.ensureNode(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("post node status", "err", err)
			}
		}
	}
}

func (a *agent) renewLease(ctx context.Context) {
	if err := a.tryRenewLease(ctx); err != nil && ctx.Err() == nil {
		a.log.Warn("renew node lease", "err", err)
	}
}

func (a *agent) tryRenewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.cfg.NodeName),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration)),
				RenewTime:            &now,
			},
		}
		if node, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{}); err == nil {
			lease.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}}
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.HolderIdentity = ptr.To(a.cfg.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(leaseDuration))
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}
