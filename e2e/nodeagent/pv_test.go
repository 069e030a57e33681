package nodeagent

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestClaimVolume(t *testing.T) {
	claim := func(name, volume string, phase corev1.PersistentVolumeClaimPhase) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
			Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: volume},
			Status:     corev1.PersistentVolumeClaimStatus{Phase: phase},
		}
	}
	pv := func(name string, src corev1.PersistentVolumeSource, capacity string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)},
				PersistentVolumeSource: src,
			},
		}
	}
	dir := t.TempDir()
	client := fake.NewSimpleClientset(
		claim("data-etcd-0", "pv-local", corev1.ClaimBound),
		claim("pending", "", corev1.ClaimPending),
		claim("data-host", "pv-host", corev1.ClaimBound),
		claim("data-nfs", "pv-nfs", corev1.ClaimBound),
		pv("pv-local", corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: filepath.Join(dir, "local")}}, "96Mi"),
		pv("pv-host", corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(dir, "host")}}, "1Gi"),
		pv("pv-nfs", corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "x", Path: "/"}}, "1Gi"),
	)
	type call struct {
		path string
		size int64
	}
	var calls []call
	w := &volumeWriter{
		claim: (&claimResolver{client: client}).resolve,
		filesystem: func(path string, size int64) error {
			calls = append(calls, call{path, size})
			return nil
		},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "etcd-0", Namespace: "ns"}}
	ctx := context.Background()

	got, err := w.claimVolume(ctx, pod, "data-etcd-0")
	if err != nil || got != filepath.Join(dir, "local") {
		t.Fatalf("local: %q, %v", got, err)
	}
	if len(calls) != 1 || calls[0] != (call{filepath.Join(dir, "local"), 96 << 20}) {
		t.Fatalf("file system prepared as %v, want one of 96 MiB at the local path", calls)
	}
	if got, err := w.claimVolume(ctx, pod, "data-host"); err != nil || got != filepath.Join(dir, "host") || len(calls) != 1 {
		t.Fatalf("hostPath: %q, %v (file systems prepared: %v)", got, err, calls)
	}
	for name, want := range map[string]string{
		"pending":  "not bound",
		"data-nfs": "only local and hostPath",
		"missing":  "not found",
	} {
		if _, err := w.claimVolume(ctx, pod, name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("claim %s: %v, want an error containing %q", name, err, want)
		}
	}
	w.filesystem = func(string, int64) error { return errors.New("no loop device") }
	if _, err := w.claimVolume(ctx, pod, "data-etcd-0"); err == nil || !strings.Contains(err.Error(), "volume pv-local: no loop device") {
		t.Fatalf("a failed file system: %v", err)
	}
}
