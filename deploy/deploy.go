package deploy

import (
	"bytes"
	_ "embed"
	"fmt"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// RBAC is deploy/rbac.yaml as shipped: a stream of ClusterRoles.
//
//go:embed rbac.yaml
var RBAC []byte

// The ClusterRoles of rbac.yaml, by name.
const (
	BackupRole           = "hcpsnap-backup"
	RestoreRole          = "hcpsnap-restore"
	RestoreNamespaceRole = "hcpsnap-restore-namespaces"
	// PullNodeRole is bound in pull-node's pod namespace, PullNodeNodesRole
	// cluster-wide.
	PullNodeRole      = "hcpsnap-pull-node"
	PullNodeNodesRole = "hcpsnap-pull-node-nodes"
)

// ClusterRoles decodes every ClusterRole of rbac.yaml, in file order.
func ClusterRoles() ([]rbacv1.ClusterRole, error) {
	var roles []rbacv1.ClusterRole
	for i, doc := range bytes.Split(RBAC, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var r rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict(doc, &r); err != nil {
			return nil, fmt.Errorf("deploy/rbac.yaml document %d: %w", i+1, err)
		}
		if r.Kind != "ClusterRole" || r.Name == "" {
			return nil, fmt.Errorf("deploy/rbac.yaml document %d is a %q named %q, not a named ClusterRole", i+1, r.Kind, r.Name)
		}
		roles = append(roles, r)
	}
	return roles, nil
}

// ClusterRole returns the ClusterRole name of rbac.yaml.
func ClusterRole(name string) (*rbacv1.ClusterRole, error) {
	roles, err := ClusterRoles()
	if err != nil {
		return nil, err
	}
	for i := range roles {
		if roles[i].Name == name {
			return &roles[i], nil
		}
	}
	return nil, fmt.Errorf("deploy/rbac.yaml has no ClusterRole %s", name)
}

// stripComments drops the lines that only hold a YAML comment, so that a
// document of comments alone counts as empty.
func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
