//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// TestLeastPrivilege runs backup and restore as a ServiceAccount bound only
// to the roles shipped in deploy/rbac.yaml, and checks that it can do no
// more than they say.
func TestLeastPrivilege(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	kubectl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(env.vars["LOCALENV_BIN_DIR"], "kubectl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.vars["KUBECONFIG"])
		out, err := cmd.CombinedOutput()
		if err != nil && !strings.Contains(strings.Join(args, " "), "auth can-i") {
			t.Fatalf("kubectl %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	kubectl("apply", "-f", "../deploy/rbac.yaml")

	const saNS, saName = "hcpsnap-system", "hcpsnap"
	restoredNS := env.namespace + "-rbac-restored"
	for _, ns := range []string{saNS, restoredNS} {
		_, err := env.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = env.kube.CoreV1().Namespaces().Delete(ctx, restoredNS, metav1.DeleteOptions{})
		_ = env.dynamicDelete(ctx, "hostedclusters", env.namespace, "rbac-restored")
		_ = env.dynamicDelete(ctx, "nodepools", env.namespace, "rbac-restored")
		_ = env.kube.CoreV1().Secrets(env.namespace).Delete(ctx, "rbac-restored-etcd-encryption-key", metav1.DeleteOptions{})
		_ = env.kube.CoreV1().Secrets(env.namespace).Delete(ctx, "rbac-restored-pull-secret", metav1.DeleteOptions{})
	})
	if _, err := env.kube.CoreV1().ServiceAccounts(saNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: saName}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: saName, Namespace: saNS}}
	bind := func(ns, role string) {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: ns}, Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role}}
		if _, err := env.kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	bind(env.namespace, "hcpsnap-backup")
	bind(env.hcpNamespace, "hcpsnap-backup")
	bind(env.namespace, "hcpsnap-restore")
	bind(restoredNS, "hcpsnap-restore")
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "hcpsnap-restore-namespaces"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "hcpsnap-restore-namespaces"}}
	if _, err := env.kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	kubeconfig := serviceAccountKubeconfig(t, env.restConfig, env.kube, saNS, saName)
	as := "system:serviceaccount:" + saNS + ":" + saName
	for _, denied := range [][]string{
		{"delete", "deployments", "-n", env.hcpNamespace},
		{"delete", "hostedclusters", "-n", env.namespace},
		{"update", "hostedclusters", "-n", env.namespace},
		{"list", "secrets", "-n", env.hcpNamespace},
		{"get", "secrets", "-n", "kube-system"},
		{"update", "deployments", "-n", env.hcpNamespace},
	} {
		if got := kubectl(append([]string{"auth", "can-i", "--as", as}, denied...)...); got != "no" {
			t.Errorf("the ServiceAccount can %v: %q", denied, got)
		}
	}

	var manifestURL string
	for _, via := range vias {
		state := env.state(t)
		res := env.hcpsnap(t, t.TempDir(), "--kubeconfig", kubeconfig, "-o", "json", "backup", "--via", via, "--prefix", "rbac-"+via)
		if res.code != 0 {
			t.Fatalf("backup --via %s as the ServiceAccount: exit %d\n%s", via, res.code, res.stderr)
		}
		env.invariants(t, state, "rbac-"+via)
		manifestURL = lastSummary(t, res.stdout).Manifest
	}
	var res hcpsnapResult
	render := strings.ReplaceAll(mustRead(t, renderFile), "restored", "rbac-restored")
	renderPath := filepath.Join(t.TempDir(), "render.yaml")
	if err := os.WriteFile(renderPath, []byte(render), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"--server-dry-run", "--apply"} {
		res = env.hcpsnap(t, t.TempDir(), "--kubeconfig", kubeconfig, "restore", "--from", manifestURL, "-f", renderPath, mode, "--out", filepath.Join(t.TempDir(), "out.yaml"))
		if res.code != 0 {
			t.Fatalf("restore %s as the ServiceAccount: exit %d\n%s", mode, res.code, res.stderr)
		}
	}
	if _, err := env.hyper.GetHostedCluster(ctx, env.namespace, "rbac-restored"); err != nil {
		t.Fatalf("the restored HostedCluster was not created: %v", err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount namespace/name with a token valid for an hour, against the
// server and CA of the admin configuration cfg.
func serviceAccountKubeconfig(t *testing.T, cfg *rest.Config, kube kubernetes.Interface, namespace, name string) string {
	t.Helper()
	tok, err := kube.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		if ca, err = os.ReadFile(cfg.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	err = os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: env, cluster: {server: %q, certificate-authority-data: %q}}]
users: [{name: %s, user: {token: %q}}]
contexts: [{name: sa, context: {cluster: env, user: %s}}]
current-context: sa
`, cfg.Host, base64.StdEncoding.EncodeToString(ca), name, tok.Status.Token, name)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return path
}
