package deploy

import (
	"slices"
	"testing"
)

// TestClusterRoles reads the embedded file and checks a rule that every
// scheduled backup needs, so a broken or renamed rbac.yaml fails here.
func TestClusterRoles(t *testing.T) {
	roles, err := ClusterRoles()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range roles {
		names = append(names, r.Name)
	}
	if want := []string{BackupRole, RestoreRole, RestoreNamespaceRole, PullNodeRole, PullNodeNodesRole}; !slices.Equal(names, want) {
		t.Fatalf("ClusterRoles = %v, want %v", names, want)
	}
	backup, err := ClusterRole(BackupRole)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range backup.Rules {
		if slices.Contains(r.Resources, "hostedclusters") && slices.Contains(r.Verbs, "patch") {
			found = true
		}
	}
	if !found {
		t.Errorf("%s has no rule to patch hostedclusters: %+v", BackupRole, backup.Rules)
	}
	if _, err := ClusterRole("nope"); err == nil {
		t.Error("ClusterRole(nope) found a role")
	}
}
