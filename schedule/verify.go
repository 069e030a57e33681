package schedule

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

// The scratch space and resources of a verify schedule's pod.
const (
	// ScratchDir is where the drill restores and serves the snapshot: an
	// emptyDir of its own, given to verify as --scratch-dir. The root file
	// system stays read-only.
	ScratchDir = "/scratch"
	// ScratchSizeLimit is the scratch emptyDir's sizeLimit. A drill needs
	// about twice the snapshot, plus 64 MiB of write-ahead log and a tenth
	// more (drill.Estimate): about 18 GiB for an etcd at HyperShift's 8 GiB
	// quota. The kubelet evicts a pod that writes past it, so a drill can
	// never fill the node's disk; the Job then fails like any failed drill.
	ScratchSizeLimit = "20Gi"
	// VerifyCPURequest and VerifyMemoryRequest are what the drill's pod
	// asks for: the embedded etcd opening and serving the restored data,
	// and the walk over its keys. There is no limit: a memory limit would
	// kill the drill of a large backup, which reads as a failed drill.
	VerifyCPURequest    = "250m"
	VerifyMemoryRequest = "512Mi"
)

// VerifySpec is a schedule that runs `hcpsnap verify --drill`: each run
// restores the newest backup of one cluster, or of every cluster under the
// prefix, into the pod's scratch emptyDir and checks what it serves. It
// reads S3 and nothing of the Kubernetes API, so it has no RBAC: its Spec's
// Target and Rules stay empty.
type VerifySpec struct {
	Spec
	// Cluster is the backed-up cluster whose newest backup is drilled;
	// empty drills the newest backup of every cluster.
	Cluster string
	// VerifyArgs are the options of `hcpsnap verify` after --drill and
	// --scratch-dir, which RenderVerify puts first: --cluster when it is
	// set, then the options passed through (bucket, prefix, S3 settings).
	VerifyArgs []string
}

// VerifyTarget is the CronJob's AnnotationTarget of a verify schedule, as
// --list shows it: "verify NAME", or "verify all" for every cluster.
func VerifyTarget(cluster string) string {
	if cluster == "" {
		return "verify all"
	}
	return "verify " + cluster
}

// DefaultVerifyName is a verify schedule's name unless told:
// hcpsnap-verify-<cluster>, or hcpsnap-verify for every cluster (a name no
// one cluster's schedule can take), cut to fit with a hash of the whole.
func DefaultVerifyName(cluster string) string {
	if cluster == "" {
		return "hcpsnap-verify"
	}
	return fitName("hcpsnap-verify-"+cluster, "")
}

// Validate checks the spec without I/O.
func (s *VerifySpec) Validate() error {
	if s.Cluster != "" {
		if errs := validation.IsDNS1123Label(s.Cluster); len(errs) > 0 {
			return fmt.Errorf("cluster %q: %s", s.Cluster, errs[0])
		}
	}
	if len(s.Rules) > 0 {
		return errors.New("a verify schedule reads S3 only and grants no RBAC rules")
	}
	if s.Target != (Target{}) {
		return errors.New("a verify schedule names its cluster in Cluster, not in Target")
	}
	return s.validateJob()
}

// RenderVerify builds the objects of a verify schedule: a ServiceAccount
// that mounts no API token and the CronJob whose pod runs `hcpsnap verify
// --drill --scratch-dir` with the scratch emptyDir; no role and no binding.
// A failed drill (exit 7 unusable, 8 key mismatch, 3 no space) fails the
// Job, which --list shows.
func RenderVerify(s VerifySpec) (*Objects, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	lbl := Labels(s.JobNamespace, s.Name)
	meta := metav1.ObjectMeta{Name: s.Name, Namespace: s.JobNamespace, Labels: copyMap(lbl)}
	o := &Objects{
		ServiceAccount: &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: *meta.DeepCopy(), AutomountServiceAccountToken: ptr.To(false)},
	}
	args := append([]string{"--drill", "--scratch-dir=" + ScratchDir}, s.VerifyArgs...)
	pod := podSpec(s.Spec, "verify", args)
	// No API token in the pod: verify reads S3 only. A web identity token,
	// when the job assumes an IAM role, is a projected volume of its own,
	// which this leaves in place.
	pod.AutomountServiceAccountToken = ptr.To(false)
	pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(apiresource.MustParse(ScratchSizeLimit))}}})
	c := &pod.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "scratch", MountPath: ScratchDir})
	c.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    apiresource.MustParse(VerifyCPURequest),
		corev1.ResourceMemory: apiresource.MustParse(VerifyMemoryRequest),
	}}
	o.CronJob = cronJob(s.Spec, *meta.DeepCopy(), lbl, VerifyTarget(s.Cluster), pod)
	return o, nil
}
