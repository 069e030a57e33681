//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestFleetLeastPrivilege runs a fleet backup as a ServiceAccount bound only
// to deploy/rbac.yaml's hcpsnap-backup role, in the HostedClusters'
// namespace and both control plane namespaces: the role's list of
// HostedClusters is all a fleet needs beyond a single backup.
func TestFleetLeastPrivilege(t *testing.T) {
	one, two := fleetEnvs(t)
	ctx := context.Background()
	kubectl := filepath.Join(one.vars["LOCALENV_BIN_DIR"], "kubectl")
	apply := exec.Command(kubectl, "apply", "-f", "../deploy/rbac.yaml")
	apply.Env = append(os.Environ(), "KUBECONFIG="+one.vars["KUBECONFIG"])
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v: %s", err, out)
	}
	const saNS, saName = "hcpsnap-system", "hcpsnap-fleet"
	if _, err := one.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: saNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := one.kube.CoreV1().ServiceAccounts(saNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: saName}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, ns := range []string{one.namespace, one.hcpNamespace, two.hcpNamespace} {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "hcpsnap-fleet-backup", Namespace: ns},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: saName, Namespace: saNS}},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "hcpsnap-backup"}}
		if _, err := one.kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = one.kube.RbacV1().RoleBindings(ns).Delete(ctx, rb.Name, metav1.DeleteOptions{}) })
	}
	kubeconfig := serviceAccountKubeconfig(t, one.restConfig, one.kube, saNS, saName)
	as := append([]string{"KUBECONFIG=" + kubeconfig}, noClusterEnv...)

	// Every namespace needs a list across namespaces, which the role's
	// namespaced bindings do not give: refused before any change.
	r := one.startHcpsnap(t, t.TempDir(), as, "backup", "--all-namespaces", "--selector", fleetSelector, "--prefix", "fleet-rbac")
	if code := r.wait(t); code != 3 || !strings.Contains(lastLine(r.stderr.String()), "list HostedClusters") || !strings.Contains(lastLine(r.stderr.String()), "forbidden") {
		t.Fatalf("-A without a cluster-wide list: exit %d, %q; want 3 and the refused list", code, lastLine(r.stderr.String()))
	}
	r = one.startHcpsnap(t, t.TempDir(), as, "-o", "json", "backup", "--selector", fleetSelector, "--prefix", "fleet-rbac")
	if code := r.wait(t); code != 0 {
		t.Fatalf("fleet as %s exit %d\nstderr:\n%s", saName, code, r.stderr.String())
	}
	results := clusterResults(t, r.stdout.String())
	one.checkFleetBackup(t, "fleet-rbac", results[one.namespace+"/"+one.cluster])
	two.checkFleetBackup(t, "fleet-rbac", results[two.namespace+"/"+two.cluster])
}
