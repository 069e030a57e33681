package schedule

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// PullNodeSpec is a schedule that runs `hcpsnap pull-node` instead of a
// backup: it copies the management cluster's own etcd snapshots off Node.
// Its Spec's Target is unused; Spec.Rules are the rules the job needs in
// its own namespace, where pull-node's short-lived pod runs (pods,
// pods/exec, the OpenShift SCC that allows its hostPath), and NodeRules the
// cluster-wide ones (reading the Node).
type PullNodeSpec struct {
	Spec
	// Node is the master whose snapshot folder is copied.
	Node string
	// PullNodeArgs are the options of `hcpsnap pull-node` after its name,
	// --node included.
	PullNodeArgs []string
	NodeRules    []rbacv1.PolicyRule
}

// PullNodeTarget is the CronJob's AnnotationTarget of a pull-node schedule.
func PullNodeTarget(node string) string { return "pull-node " + node }

// DefaultPullNodeName is a pull-node schedule's name unless told:
// hcpsnap-pull-node-<node>, cut to fit with a hash of the whole.
func DefaultPullNodeName(node string) string {
	return fitName("hcpsnap-pull-node-"+nonAlnum.ReplaceAllString(node, "-"), "")
}

// PullNodeRBACName is the name of a pull-node schedule's ClusterRole (the
// pod rules, bound in the job namespace) and, with ":nodes", of the one
// bound cluster-wide.
func PullNodeRBACName(jobNamespace, name string) string {
	return "hcpsnap-pull-node:" + jobNamespace + ":" + name
}

// Validate checks the spec without I/O.
func (s *PullNodeSpec) Validate() error {
	if errs := validation.IsDNS1123Subdomain(s.Node); len(errs) > 0 {
		return fmt.Errorf("node %q: %s", s.Node, errs[0])
	}
	if len(s.Rules) == 0 {
		return fmt.Errorf("no RBAC rules for the ServiceAccount")
	}
	if len(s.NodeRules) == 0 {
		return fmt.Errorf("no cluster-wide RBAC rules for the ServiceAccount")
	}
	return s.validateJob()
}

// RenderPullNode builds the objects of a pull-node schedule: a ClusterRole
// of the pod rules bound by a RoleBinding in the job's namespace alone, a
// ClusterRole of the node rules bound cluster-wide, the ServiceAccount, and
// the CronJob whose pod runs `hcpsnap pull-node`. pull-node's own pod runs
// in the job's namespace (the in-cluster default of --pod-namespace).
func RenderPullNode(s PullNodeSpec) (*Objects, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	lbl := Labels(s.JobNamespace, s.Name)
	meta := func(namespace, name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: copyMap(lbl)}
	}
	podRole, nodeRole := PullNodeRBACName(s.JobNamespace, s.Name), PullNodeRBACName(s.JobNamespace, s.Name)+":nodes"
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: s.Name, Namespace: s.JobNamespace}}
	typeMeta := func(kind string) metav1.TypeMeta {
		return metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: kind}
	}
	o := &Objects{
		ClusterRole:     &rbacv1.ClusterRole{TypeMeta: typeMeta("ClusterRole"), ObjectMeta: meta("", podRole), Rules: s.Rules},
		NodeClusterRole: &rbacv1.ClusterRole{TypeMeta: typeMeta("ClusterRole"), ObjectMeta: meta("", nodeRole), Rules: s.NodeRules},
		ServiceAccount: &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: meta(s.JobNamespace, s.Name)},
		RoleBindings: []*rbacv1.RoleBinding{{TypeMeta: typeMeta("RoleBinding"), ObjectMeta: meta(s.JobNamespace, podRole), Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: podRole}}},
		ClusterRoleBinding: &rbacv1.ClusterRoleBinding{TypeMeta: typeMeta("ClusterRoleBinding"), ObjectMeta: meta("", nodeRole), Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: nodeRole}},
	}
	o.CronJob = cronJob(s.Spec, meta(s.JobNamespace, s.Name), lbl, PullNodeTarget(s.Node), podSpec(s.Spec, "pull-node", s.PullNodeArgs))
	return o, nil
}
