package pullnode

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// The pod's shape. The container runs hcpsnap's own image, which has no
// shell: its command and every exec are hcpsnap itself.
const (
	// Binary is hcpsnap's path in its image (hack/image).
	Binary = "/hcpsnap"
	// Container is the name of the pod's only container.
	Container = "node-files"
	// MountPath is where the node's target folder appears in the pod.
	MountPath = "/host-snapshots"
	// volumeName is the hostPath volume of the target folder.
	volumeName = "snapshots"
	// generateName starts the name of every pod.
	generateName = "hcpsnap-pull-node-"
)

// Labels of the pod: hcpsnap made it, for this node. A run finds the pods an
// earlier, killed run left behind by them.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "hcpsnap"
	LabelNode      = "hcpsnap.io/pull-node"
	// AnnotationNode holds the node's full name when it is too long for a
	// label value.
	AnnotationNode = "hcpsnap.io/pull-node"
)

// NodeFilesCommand is the hidden subcommand of hcpsnap that the pod runs.
const NodeFilesCommand = "node-files"

// nodeLabel is the value of LabelNode for a node: its name when that is a
// valid label value, else a hash of it.
func nodeLabel(node string) string {
	if len(validation.IsValidLabelValue(node)) == 0 {
		return node
	}
	sum := sha256.Sum256([]byte(node))
	return "sha256-" + hex.EncodeToString(sum[:])[:40]
}

// Selector selects the pods of pull-node for a node.
func Selector(node string) string {
	return LabelManagedBy + "=" + ManagedBy + "," + LabelNode + "=" + nodeLabel(node)
}

// PodSpec returns the pod that serves the node's target folder for the
// length of deadline: pinned to the node, tolerating every taint (masters
// have theirs), the folder mounted read-only, root only because
// cluster-backup.sh's files are root's and 0600, and nothing else: no
// privilege, no capability, no service account token, a read-only root.
func PodSpec(o Options) *corev1.Pod {
	no, yes := false, true
	root := int64(0)
	secs := int64(o.PodDeadline / time.Second)
	dirType := corev1.HostPathDirectory
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: generateName,
			Namespace:    o.PodNamespace,
			Labels:       map[string]string{LabelManagedBy: ManagedBy, LabelNode: nodeLabel(o.Node)},
			Annotations:  map[string]string{AnnotationNode: o.Node},
		},
		Spec: corev1.PodSpec{
			NodeName:                      o.Node,
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &secs,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: func() *int64 { s := int64(5); return &s }(),
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Volumes: []corev1.Volume{{Name: volumeName, VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: o.TargetDir, Type: &dirType},
			}}},
			Containers: []corev1.Container{{
				Name:            Container,
				Image:           o.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{Binary, NodeFilesCommand, "wait", "--deadline", o.PodDeadline.String()},
				VolumeMounts:    []corev1.VolumeMount{{Name: volumeName, MountPath: MountPath, ReadOnly: true}},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser:                &root,
					RunAsNonRoot:             &no,
					Privileged:               &no,
					AllowPrivilegeEscalation: &no,
					ReadOnlyRootFilesystem:   &yes,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				Resources: corev1.ResourceRequirements{},
			}},
		},
	}
}

// cleanStale deletes the pods of earlier runs for the node that have ended
// (a run killed before it could delete its pod; their deadline ended them),
// and reports the ones still running: another run may be copying now.
func cleanStale(ctx context.Context, kube kubernetes.Interface, o Options, warn func(msg string, kv ...any)) error {
	pods, err := kube.CoreV1().Pods(o.PodNamespace).List(ctx, metav1.ListOptions{LabelSelector: Selector(o.Node)})
	if err != nil {
		return fmt.Errorf("list earlier pull-node pods in namespace %s: %w", o.PodNamespace, err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Annotations[AnnotationNode] != o.Node && p.Annotations[AnnotationNode] != "" {
			continue // another node whose name hashed alike
		}
		switch {
		case p.DeletionTimestamp != nil:
		case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
			warn("deleting the pod of an earlier pull-node run that ended", "pod", o.PodNamespace+"/"+p.Name, "phase", string(p.Status.Phase))
			if err := deletePod(ctx, kube, o.PodNamespace, p.Name); err != nil {
				return err
			}
		default:
			warn("another pull-node pod for this node is still there: another run may be copying now (its deadline ends it by itself)",
				"pod", o.PodNamespace+"/"+p.Name, "phase", string(p.Status.Phase), "created", p.CreationTimestamp.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// deletePod deletes a pod in the foreground; a pod already gone is fine.
func deletePod(ctx context.Context, kube kubernetes.Interface, namespace, name string) error {
	err := kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", namespace, name, err)
	}
	return nil
}

// waitGone waits until the pod object is gone (the kubelet has stopped its
// container), polling every interval until ctx ends.
func waitGone(ctx context.Context, kube kubernetes.Interface, namespace, name string, interval time.Duration) error {
	for {
		_, err := kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s is not gone yet: %w", namespace, name, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// errPodEnded is a pod that ended or cannot start.
var errPodEnded = errors.New("pod cannot serve the files")

// waitRunning waits until the pod's container runs, polling every interval
// until ctx ends. A pod that ended, or whose container waits for a reason
// that does not pass by itself (an image that cannot be pulled, a volume
// that cannot be mounted), is an error at once.
func waitRunning(ctx context.Context, kube kubernetes.Interface, namespace, name string, interval time.Duration) error {
	for {
		p, err := kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read pod %s/%s: %w", namespace, name, err)
		}
		if err := podProblem(p); err != nil {
			return err
		}
		if p.Status.Phase == corev1.PodRunning {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Name == Container && cs.State.Running != nil {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s did not start (phase %s%s): %w", namespace, name, p.Status.Phase, podReason(p), ctx.Err())
		case <-time.After(interval):
		}
	}
}

// podProblem reports a pod that will not serve the files.
func podProblem(p *corev1.Pod) error {
	switch p.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return fmt.Errorf("%w: pod %s/%s ended (phase %s%s)", errPodEnded, p.Namespace, p.Name, p.Status.Phase, podReason(p))
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
				return fmt.Errorf("%w: pod %s/%s: %s: %s", errPodEnded, p.Namespace, p.Name, w.Reason, oneLine(w.Message))
			}
		}
		if t := cs.State.Terminated; t != nil {
			return fmt.Errorf("%w: pod %s/%s: container ended with status %d (%s)", errPodEnded, p.Namespace, p.Name, t.ExitCode, t.Reason)
		}
	}
	return nil
}

// podReason is the pod's reason and message, if any, for an error.
func podReason(p *corev1.Pod) string {
	s := ""
	if p.Status.Reason != "" {
		s += ", " + p.Status.Reason
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
			s += ", " + oneLine(c.Message)
		}
	}
	if p.Status.Message != "" {
		s += ": " + oneLine(p.Status.Message)
	}
	return s
}

// itoa formats an int64 for a command line.
func itoa(n int64) string { return strconv.FormatInt(n, 10) }
