//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// arbitraryUID is a UID from OpenShift's range for a namespace, which no /etc/passwd lists.
const arbitraryUID = 1000650000

// TestImageRunsInPod runs hcpsnap's image, the one the CronJob runs, as a pod of the local environment under
// OpenShift's restricted rules: an arbitrary UID with group 0, a read-only root file system, an emptyDir at /tmp,
// all capabilities dropped, and only the ServiceAccount's token to reach the API server (no kubeconfig). One
// container prints the backup runbook, which reads the HostedCluster and its control plane through the
// in-cluster configuration; the other shows that / cannot be written. The UID is checked on the file the first
// container leaves in its emptyDir.
func TestImageRunsInPod(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	image := hcpsnapImage(t)
	kubectl := exec.Command(filepath.Join(env.vars["LOCALENV_BIN_DIR"], "kubectl"), "apply", "-f", "../deploy/rbac.yaml")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+env.vars["KUBECONFIG"])
	if out, err := kubectl.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v: %s", err, out)
	}

	const ns, sa = "hcpsnap-image", "hcpsnap"
	if _, err := env.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		for _, n := range []string{env.namespace, env.hcpNamespace} {
			_ = env.kube.RbacV1().RoleBindings(n).Delete(ctx, "hcpsnap-image-backup", metav1.DeleteOptions{})
		}
	})
	if _, err := env.kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, n := range []string{env.namespace, env.hcpNamespace} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "hcpsnap-image-backup", Namespace: n},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "hcpsnap-backup"},
		}
		if _, err := env.kube.RbacV1().RoleBindings(n).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	// S3 settings come from a Secret, as the scheduled job's do; a dry run opens the store but writes nothing.
	s3 := map[string]string{}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_S3"} {
		s3[k] = env.vars[k]
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3", Namespace: ns}, StringData: s3}
	if _, err := env.kube.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	restricted := &corev1.SecurityContext{
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	tmp := []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hcpsnap", Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			RestartPolicy:      corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: ptr.To[int64](arbitraryUID), RunAsGroup: ptr.To[int64](0), RunAsNonRoot: ptr.To(true),
			},
			Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Containers: []corev1.Container{
				{
					Name: "runbook", Image: image, SecurityContext: restricted, VolumeMounts: tmp,
					Args: []string{"backup", "--cluster", env.cluster, "--namespace", env.namespace, "--bucket", env.bucket, "--dry-run"},
					// The profile is the one file hcpsnap writes here; its owner on the node shows the process's UID.
					Env:     []corev1.EnvVar{{Name: "HCPSNAP_CPU_PROFILE", Value: "/tmp/cpu.pprof"}},
					EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s3"}}}},
				},
				{
					Name: "write-root", Image: image, SecurityContext: restricted, VolumeMounts: tmp,
					Args: []string{"version"},
					Env:  []corev1.EnvVar{{Name: "HCPSNAP_CPU_PROFILE", Value: "/cpu.pprof"}},
				},
			},
		},
	}
	if _, err := env.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var err error
		if got, err = env.kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		if got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	logs := map[string]string{}
	for _, c := range pod.Spec.Containers {
		data, err := env.kube.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("logs of %s: %v", c.Name, err)
		}
		logs[c.Name] = string(data)
	}
	if got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod phase %s, statuses %+v\nrunbook:\n%s\nwrite-root:\n%s", got.Status.Phase, got.Status.ContainerStatuses, logs["runbook"], logs["write-root"])
	}
	for _, want := range []string{"pause-reconciliation", "etcd-0", "kube-apiserver", env.hcpNamespace, "snapshot.db", "etcdctl"} {
		if !strings.Contains(logs["runbook"], want) {
			t.Errorf("the runbook printed in the pod lacks %q:\n%s", want, logs["runbook"])
		}
	}
	if !strings.Contains(logs["write-root"], "open /cpu.pprof: read-only file system") || !strings.Contains(logs["write-root"], "hcpsnap ") {
		t.Errorf("write-root: want the version and a write to / refused as read-only:\n%s", logs["write-root"])
	}
	// The emptyDir lives in the node agent's pod folder; the profile there belongs to the pod's UID and group 0.
	profile := filepath.Join(env.vars["LOCALENV_DIR"], "nodeagent", "pods", ns, pod.Name, "volumes", "tmp", "cpu.pprof")
	fi, err := os.Stat(profile)
	if err != nil {
		t.Fatalf("the profile written to /tmp: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != arbitraryUID || st.Gid != 0 {
		t.Errorf("%s belongs to %d:%d, want %d:0", profile, st.Uid, st.Gid, arbitraryUID)
	}
}
