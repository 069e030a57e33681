package pullnode

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The pod reads the folder and can do nothing else: read-only hostPath of
// that folder only, root without privilege or capabilities, no token, a
// deadline of its own, on the node whatever its taints.
func TestPodSpec(t *testing.T) {
	o := testOptions("")
	p := PodSpec(o)
	s := p.Spec
	c := s.Containers[0]
	sc := c.SecurityContext
	switch {
	case p.GenerateName != generateName || p.Name != "" || p.Namespace != "hcpsnap":
		t.Errorf("name %q/%q in %q", p.GenerateName, p.Name, p.Namespace)
	case p.Labels[LabelManagedBy] != ManagedBy || p.Labels[LabelNode] != "master-0":
		t.Errorf("labels %v", p.Labels)
	case s.NodeName != "master-0" || s.RestartPolicy != corev1.RestartPolicyNever:
		t.Errorf("node %q, restart %q", s.NodeName, s.RestartPolicy)
	case len(s.Tolerations) != 1 || s.Tolerations[0].Operator != corev1.TolerationOpExists || s.Tolerations[0].Key != "":
		t.Errorf("tolerations %+v, want one that tolerates everything", s.Tolerations)
	case s.ActiveDeadlineSeconds == nil || *s.ActiveDeadlineSeconds != 3600:
		t.Errorf("activeDeadlineSeconds %v", s.ActiveDeadlineSeconds)
	case s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken:
		t.Error("the service account token is mounted")
	case s.HostNetwork || s.HostPID || s.HostIPC:
		t.Error("a host namespace is shared")
	case len(s.Volumes) != 1 || s.Volumes[0].HostPath == nil || s.Volumes[0].HostPath.Path != o.TargetDir || *s.Volumes[0].HostPath.Type != corev1.HostPathDirectory:
		t.Errorf("volumes %+v", s.Volumes)
	case len(s.Containers) != 1 || len(s.InitContainers) != 0:
		t.Errorf("%d containers", len(s.Containers))
	case c.Image != o.Image || c.Command[0] != Binary || !slices.Equal(c.Command[1:3], []string{NodeFilesCommand, "wait"}):
		t.Errorf("image %q command %q", c.Image, c.Command)
	case len(c.VolumeMounts) != 1 || !c.VolumeMounts[0].ReadOnly || c.VolumeMounts[0].MountPath != MountPath:
		t.Errorf("mounts %+v", c.VolumeMounts)
	case sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.Privileged == nil || *sc.Privileged:
		t.Errorf("security context %+v", sc)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("security context %+v", sc)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("capabilities %+v", sc.Capabilities)
	case len(c.Env) != 0 || len(c.EnvFrom) != 0:
		t.Error("the container gets environment variables")
	}
}

func TestNodeLabel(t *testing.T) {
	long := strings.Repeat("master-", 12) + "0.example.com"
	for _, node := range []string{"master-0", "ip-10-0-1-2.ec2.internal", long} {
		v := nodeLabel(node)
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("nodeLabel(%q) = %q: %s", node, v, errs[0])
		}
		if (v == node) != (len(node) <= 63) {
			t.Errorf("nodeLabel(%q) = %q", node, v)
		}
	}
	if nodeLabel(long) == nodeLabel(long+"x") {
		t.Error("two long names share a label")
	}
}
