package schedule

import (
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
)

func pullNodeSpec() PullNodeSpec {
	return PullNodeSpec{
		Spec: Spec{Name: DefaultPullNodeName("master-0"), JobNamespace: "hcpsnap", Cron: "30 * * * *", TimeZone: "UTC",
			StartingDeadline: time.Hour, Image: "registry.example/hcpsnap@sha256:" + strings.Repeat("b", 64),
			Credentials: Credentials{Secret: "s3"},
			Rules:       []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create"}}}},
		Node:         "master-0",
		PullNodeArgs: []string{"--node=master-0", "--bucket=bkt"},
		NodeRules:    []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}}},
	}
}

// The pod rules are granted in the job's namespace only; the node rules,
// and only they, cluster-wide; the job runs pull-node.
func TestRenderPullNode(t *testing.T) {
	s := pullNodeSpec()
	o, err := RenderPullNode(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.RoleBindings) != 1 || o.RoleBindings[0].Namespace != "hcpsnap" || o.RoleBindings[0].RoleRef.Name != o.ClusterRole.Name {
		t.Errorf("role bindings %+v, want one in hcpsnap to the pod rules", o.RoleBindings)
	}
	if o.ClusterRoleBinding == nil || o.ClusterRoleBinding.RoleRef.Name != o.NodeClusterRole.Name || o.ClusterRoleBinding.RoleRef.Name == o.ClusterRole.Name {
		t.Errorf("cluster role binding %+v, want it to the node rules only", o.ClusterRoleBinding)
	}
	if !slices.Equal(o.NodeClusterRole.Rules[0].Resources, []string{"nodes"}) || !slices.Equal(o.ClusterRole.Rules[0].Resources, []string{"pods"}) {
		t.Errorf("rules: pods %+v, nodes %+v", o.ClusterRole.Rules, o.NodeClusterRole.Rules)
	}
	args := o.CronJob.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Args
	if want := append(append(slices.Clone(GlobalArgs), "pull-node"), s.PullNodeArgs...); !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
	if o.CronJob.Annotations[AnnotationTarget] != "pull-node master-0" {
		t.Errorf("target annotation %q", o.CronJob.Annotations[AnnotationTarget])
	}
	for _, obj := range o.List() {
		if m, ok := obj.(interface{ GetLabels() map[string]string }); !ok || !OwnedBy(m.GetLabels(), "hcpsnap", s.Name) {
			t.Errorf("%T lacks the schedule's labels", obj)
		}
	}
	if n := len(o.List()); n != 6 {
		t.Errorf("%d objects, want 2 ClusterRoles, a ServiceAccount, a RoleBinding, a ClusterRoleBinding and the CronJob", n)
	}
}

func TestRenderPullNodeRefuses(t *testing.T) {
	for name, change := range map[string]func(*PullNodeSpec){
		"bad node":      func(s *PullNodeSpec) { s.Node = "Master_0" },
		"no node rules": func(s *PullNodeSpec) { s.NodeRules = nil },
		"no pod rules":  func(s *PullNodeSpec) { s.Rules = nil },
		"bad cron":      func(s *PullNodeSpec) { s.Cron = "every hour" },
		"tag image":     func(s *PullNodeSpec) { s.Image = "registry.example/hcpsnap:latest" },
		"no creds":      func(s *PullNodeSpec) { s.Credentials = Credentials{} },
		"long name":     func(s *PullNodeSpec) { s.Name = strings.Repeat("a", 60) },
	} {
		s := pullNodeSpec()
		change(&s)
		if _, err := RenderPullNode(s); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
	if n := DefaultPullNodeName(strings.Repeat("master.example.com.", 5)); len(n) > MaxNameLength || CheckName(n) != nil {
		t.Errorf("DefaultPullNodeName of a long node: %q", n)
	}
}
