package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	charmlog "github.com/charmbracelet/log"
	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// HyperShift is what the steps need of HyperShift's API.
type HyperShift interface {
	GetHostedCluster(ctx context.Context, namespace, name string) (*hyperv1.HostedCluster, error)
	PatchHostedCluster(ctx context.Context, namespace, name string, mergePatch []byte) (*hyperv1.HostedCluster, error)
	GetHostedControlPlane(ctx context.Context, namespace, name string) (*hyperv1.HostedControlPlane, error)
	// GetEtcdShards reads spec.etcd.managed.shards of the HostedCluster,
	// which the typed object above cannot hold (the vendored API predates
	// shards).
	GetEtcdShards(ctx context.Context, namespace, name string) ([]kube.EtcdShard, error)
}

// Step names of the backup workflow. They are stable: checkpoint keys,
// values of --skip-steps and lines of the runbook.
const (
	StepPreflight       = "preflight"
	StepPause           = "pause-reconciliation"
	StepScaleDown       = "scale-down-apiservers"
	StepSnapshotSave    = "snapshot-save"
	StepScaleUp         = "scale-up-apiservers"
	StepResume          = "resume-reconciliation"
	StepUpload          = "upload-snapshot"
	StepSaveKeys        = "save-encryption-key"
	StepCleanupPodFile  = "cleanup-pod-file"
	StepWriteManifest   = "write-manifest"
	pollInterval        = 200 * time.Millisecond
	timestampFormat     = manifest.TimestampFormat
	defaultWaitTimeout  = 5 * time.Minute
	snapshotObjectName  = manifest.SnapshotObject
	manifestObjectName  = manifest.ManifestObject
	keyBundleObjectName = manifest.KeyBundleObject
)

// Backup returns the backup workflow in the order the runbook performs it.
// The API comes back (scale-up, resume) as soon as etcd has fixed the
// snapshot's revision, while etcdctl still writes the file, and the upload
// reads the file as it grows: the downtime includes neither the bulk of the
// snapshot nor the upload (podscript.go says why that is safe).
func Backup() []Step {
	online := func(s *State) bool { return s.Opts.Online }
	return []Step{
		{Name: StepPreflight, ReadOnly: true, Run: preflight, Plan: planPreflight,
			Summary: "Check the HostedCluster, its etcd member, the API Deployments and the bucket; change nothing."},
		{Name: StepPause, Skip: online, Run: pause, Plan: planPause, Reapply: true,
			Summary: "Record spec.pausedUntil, then pause reconciliation until a deadline (a dead-man's switch)."},
		{Name: StepScaleDown, Skip: online, Run: scaleDown, Plan: planScaleDown, Reapply: true,
			Needs:   []string{StepPause},
			Summary: "Record the API Deployments' replicas, scale them to 0 and wait until their pods are gone."},
		{Name: StepSnapshotSave, Run: snapshotSave, Plan: planSnapshotSave,
			Needs:   []string{StepPause, StepScaleDown},
			Summary: "Start etcdctl snapshot save inside the member's pod and wait until etcd has fixed the snapshot's revision."},
		{Name: StepScaleUp, Reverts: StepScaleDown, RestoresService: true, Skip: online, Run: scaleUp, Plan: planScaleUp,
			Summary: "Scale the API Deployments back to their recorded replicas and wait until they are available."},
		{Name: StepResume, Reverts: StepPause, RestoresService: true, Skip: online, Run: resume, Plan: planResume,
			Summary: "Put spec.pausedUntil back to its recorded value (removed when it was absent)."},
		{Name: StepUpload, Run: upload, Plan: planUpload,
			Needs: []string{StepSnapshotSave}, Uses: []string{StepSnapshotSave},
			Summary: "Stream the snapshot out of the pod as etcdctl writes it into an S3 multipart upload, verifying etcd's SHA-256; record its status."},
		{Name: StepSaveKeys, Run: saveKeys, Plan: planSaveKeys,
			Summary: "Save the etcd encryption key and the Secrets a restore needs apart from the snapshot: under --key-prefix in the bucket (server-side encrypted with --sse or the bucket's default), or in the --key-out file (not encrypted)."},
		{Name: StepCleanupPodFile, Reverts: StepSnapshotSave, Run: cleanupPodFile, Plan: planCleanupPodFile,
			Uses:    []string{StepSnapshotSave},
			Summary: "Stop etcdctl if it still writes and remove the snapshot files from the pod."},
		{Name: StepWriteManifest, Run: writeManifest, Plan: planWriteManifest,
			Uses:    []string{StepSnapshotSave, StepUpload, StepSaveKeys},
			Summary: "Write the manifest that describes the backup beside the snapshot."},
	}
}

// ---------------------------------------------------------------------------
// preflight

func preflight(ctx context.Context, s *State) error {
	hc, err := inspect(ctx, s)
	if err != nil {
		return err
	}
	if err := CheckNotHeld(hc, s.Run.RunID); err != nil {
		return err
	}
	if err := checkPausedUntil(hc.Spec.PausedUntil); err != nil {
		return err
	}
	pod, err := s.Clients.Kube.CoreV1().Pods(s.Out.HCPNamespace).Get(ctx, s.Opts.Member, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return exitcode.Preconditionf("etcd pod %s not found in namespace %s: check the hosted control plane, or choose a member with --member", s.Opts.Member, s.Out.HCPNamespace)
	}
	if err != nil {
		return err
	}
	if err := checkMemberPod(pod, s.Opts.Container); err != nil {
		return err
	}
	if s.via() == ViaStream {
		if err := checkMemberStream(ctx, s); err != nil {
			return err
		}
	} else {
		s.Out.CACert = detectCACert(pod, s.Opts)
		if err := checkPodTools(ctx, s); err != nil {
			return err
		}
		if err := checkMemberHealth(ctx, s); err != nil {
			return err
		}
		if err := checkShardMembers(ctx, s); err != nil {
			return err
		}
	}
	if !s.Opts.Online {
		for _, name := range s.Opts.Deployments {
			scale, err := s.Clients.Kube.AppsV1().Deployments(s.Out.HCPNamespace).GetScale(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return exitcode.Preconditionf("Deployment %s not found in namespace %s: name the API Deployments with --deployments", name, s.Out.HCPNamespace)
			}
			if err != nil {
				return err
			}
			if scale.Spec.Replicas == 0 && s.Out.Replicas[name] == 0 {
				return exitcode.Preconditionf("Deployment %s/%s already has 0 replicas: the API is not serving; scale it up first, or leave it out with --deployments", s.Out.HCPNamespace, name)
			}
		}
	}
	if err := s.Clients.Store.CheckWritable(ctx, s.Opts.Prefix); err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	return nil
}

// inspect reads the HostedCluster and records what the later steps and the
// manifest need. It is shared by preflight and its plan.
func inspect(ctx context.Context, s *State) (*hyperv1.HostedCluster, error) {
	hc, err := s.Clients.HyperShift.GetHostedCluster(ctx, s.Opts.Namespace, s.Opts.Cluster)
	if apierrors.IsNotFound(err) {
		return nil, exitcode.Preconditionf("HostedCluster %s/%s not found: check --cluster and --namespace (kubectl get hostedclusters -A)", s.Opts.Namespace, s.Opts.Cluster)
	}
	if err != nil {
		return nil, fmt.Errorf("read HostedCluster %s/%s: %w", s.Opts.Namespace, s.Opts.Cluster, err)
	}
	if hc.Spec.Etcd.ManagementType != hyperv1.Managed {
		return nil, exitcode.Preconditionf("HostedCluster %s/%s has %q etcd: hcpsnap backs up managed etcd only; back up an unmanaged etcd with its own tools", s.Opts.Namespace, s.Opts.Cluster, hc.Spec.Etcd.ManagementType)
	}
	if err := checkShards(ctx, s); err != nil {
		return nil, err
	}
	s.Out.HCPNamespace = s.Opts.Namespace + "-" + s.Opts.Cluster
	s.Out.InfraID = hc.Spec.InfraID
	if hc.Status.Version != nil {
		s.Out.OpenShiftVersion = hc.Status.Version.Desired.Version
		for _, h := range hc.Status.Version.History {
			if h.State == "Completed" {
				s.Out.OpenShiftVersion = h.Version
				break
			}
		}
	}
	if s.Out.Timestamp == "" {
		s.Out.Timestamp = s.now().UTC().Format(timestampFormat)
	}
	return hc, nil
}

// checkShards records the HostedCluster's etcd shards. hcpsnap snapshots
// one member of the default etcd, and the resources routed to a shard live
// in that shard's own etcd: the backup takes a snapshot of each shard's
// first member too, in the same offline window (Outputs.Shards). With
// --without-shards it takes the default member only and records the shards
// left out, for the manifest. Shard snapshots are taken in the pod (--via
// exec); a streamed backup of a sharded cluster is refused before anything
// changed.
func checkShards(ctx context.Context, s *State) error {
	shards, err := s.Clients.HyperShift.GetEtcdShards(ctx, s.Opts.Namespace, s.Opts.Cluster)
	if err != nil {
		return exitcode.New(exitcode.Precondition, fmt.Errorf("read the etcd shards of HostedCluster %s/%s: %w", s.Opts.Namespace, s.Opts.Cluster, err))
	}
	all := ManifestShards(shards)
	s.Out.MissingShards = nil
	if len(all) == 0 {
		s.Out.Shards = nil
		return nil
	}
	if s.Opts.WithoutShards {
		s.Out.MissingShards, s.Out.Shards = all, nil
		return nil
	}
	if s.via() == ViaStream {
		return exitcode.Preconditionf("HostedCluster %s/%s has etcd shards %s: hcpsnap takes shard snapshots in the pods only; pass --via exec (or --without-shards to back up the default member alone)",
			s.Opts.Namespace, s.Opts.Cluster, manifest.DescribeShards(all))
	}
	// Keep what an earlier attempt of this run recorded of a shard that is
	// still there, so that a resumed run finds its files and uploads.
	recorded := map[string]ShardRun{}
	for _, sh := range s.Out.Shards {
		recorded[sh.Shard.Name] = sh
	}
	s.Out.Shards = make([]ShardRun, len(all))
	for i, sh := range all {
		run := recorded[sh.Name]
		run.Shard, run.Pod = sh, ShardPod(sh.Name)
		s.Out.Shards[i] = run
	}
	return nil
}

// checkShardMembers checks, as preflight does for the default member, that
// each shard's member pod is Running and Ready with the etcd container,
// answers etcdctl with the same TLS files, and has room for its snapshot.
func checkShardMembers(ctx context.Context, s *State) error {
	return s.eachShard(ctx, func(ctx context.Context, v *State) error {
		pod, err := v.Clients.Kube.CoreV1().Pods(v.Out.HCPNamespace).Get(ctx, v.Opts.Member, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return exitcode.Preconditionf("etcd pod %s not found in namespace %s: check the shard's StatefulSet %s, or back up the default member alone with --without-shards",
				v.Opts.Member, v.Out.HCPNamespace, strings.TrimSuffix(v.Opts.Member, "-0"))
		}
		if err != nil {
			return err
		}
		if err := checkMemberPod(pod, v.Opts.Container); err != nil {
			return err
		}
		return checkMemberHealth(ctx, v)
	})
}

// ManifestShards converts shards as read from the HostedCluster into the
// manifest's form; nil for none.
func ManifestShards(shards []kube.EtcdShard) []manifest.Shard {
	if len(shards) == 0 {
		return nil
	}
	out := make([]manifest.Shard, len(shards))
	for i, sh := range shards {
		out[i] = manifest.Shard{Name: sh.Name, Replicas: sh.Replicas, StorageType: sh.StorageType,
			Resources: make([]manifest.ShardResource, len(sh.Resources))}
		for j, r := range sh.Resources {
			out[i].Resources[j] = manifest.ShardResource{APIGroup: r.APIGroup, Resource: r.Resource}
		}
	}
	return out
}

// checkPausedUntil refuses a pausedUntil that HyperShift itself rejects:
// restoring it afterwards would put back a broken value.
func checkPausedUntil(v *string) error {
	if v == nil {
		return nil
	}
	if _, err := strconv.ParseBool(*v); err == nil {
		return nil
	}
	if _, err := time.Parse(time.RFC3339, *v); err == nil {
		return nil
	}
	return exitcode.Preconditionf("spec.pausedUntil %q is neither true/false nor an RFC3339 time: fix or remove it on the HostedCluster first", *v)
}

func checkMemberPod(pod *corev1.Pod, container string) error {
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning || !podutils.IsPodReady(pod) {
		return exitcode.Preconditionf("etcd pod %s/%s is not Running and Ready (phase %s): wait for it, or choose a healthy member with --member", pod.Namespace, pod.Name, pod.Status.Phase)
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == container {
			return nil
		}
	}
	return exitcode.Preconditionf("pod %s/%s has no container %q: name the etcd container with --container", pod.Namespace, pod.Name, container)
}

// detectCACert chooses the CA path: the user's, else the OCP 4.12+ path when
// the pod mounts the etcd-ca volume there, else the older client CA path.
func detectCACert(pod *corev1.Pod, o Options) string {
	if o.Etcd.CACert != "" {
		return o.Etcd.CACert
	}
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) == path.Dir(CACertPath) {
				return CACertPath
			}
		}
	}
	return LegacyCACertPath
}

// etcdctl returns the runbook's etcdctl command line with the TLS flags.
func etcdctl(s *State, args ...string) []string {
	e := s.Opts.Etcd
	cmd := []string{e.Etcdctl, "--cacert", s.Out.CACert, "--cert", e.Cert, "--key", e.Key, "--endpoints", e.Endpoint}
	return append(cmd, args...)
}

// etcdutlPath is the etcdutl the options name, by default DefaultEtcdutl.
func (e EtcdOptions) etcdutlPath() string {
	if e.Etcdutl == "" {
		return DefaultEtcdutl
	}
	return e.Etcdutl
}

// checkPodTools proves, in one exec and before anything is changed, that the
// container has every program the steps run there, and chooses what reads
// the snapshot's status (podTools.statusTool), recorded in the outputs.
func checkPodTools(ctx context.Context, s *State) error {
	var stdout, stderr bytes.Buffer
	where := fmt.Sprintf("container %s of pod %s/%s", s.Opts.Container, s.Out.HCPNamespace, s.Opts.Member)
	cmd := append([]string{"sh", "-c", toolsScript, "sh", s.Opts.Etcd.Etcdctl, s.Opts.Etcd.etcdutlPath()}, podPrograms[1:]...)
	if err := s.exec(ctx, cmd, &stdout, &stderr); err != nil {
		return exitcode.Preconditionf("cannot run sh in %s: %v (%s); hcpsnap needs sh, %s and etcdctl there: name the etcd container with --container",
			where, err, firstLine(stderr.String()), strings.Join(podPrograms[1:], ", "))
	}
	t, err := parsePodTools(stdout.String())
	if err != nil {
		return fmt.Errorf("check the programs in %s: %w", where, err)
	}
	if len(t.Missing) > 0 {
		return exitcode.Preconditionf("%s lacks %s, which hcpsnap runs there: check --etcdctl and --container, or use the HostedCluster's own etcd image",
			where, strings.Join(t.Missing, ", "))
	}
	tool, ok := t.statusTool()
	if !ok {
		version := t.EtcdctlVersion
		if version == "" {
			version = "of unknown version"
		}
		return exitcode.Preconditionf("%s has no etcdutl at %s, and etcdctl %s has no `snapshot status` (etcd 3.6 removed it): point --etcdutl at etcdutl in the etcd image (HyperShift's has /usr/bin/etcdutl since OpenShift 4.12)",
			where, s.Opts.Etcd.etcdutlPath(), version)
	}
	s.Out.StatusTool = tool
	log(ctx).Info("etcd container checked", "etcdctl", t.EtcdctlVersion, "snapshotStatusBy", tool)
	return nil
}

// checkMemberHealth runs `etcdctl endpoint status` in the pod: it proves
// etcdctl, the TLS files and the member, and gives the database size to
// compare with the free space of the snapshot folder.
func checkMemberHealth(ctx context.Context, s *State) error {
	var stdout, stderr bytes.Buffer
	err := s.Clients.Exec.Exec(ctx, s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container,
		etcdctl(s, "endpoint", "status", "-w", "json"), nil, &stdout, &stderr)
	if err != nil {
		return exitcode.Preconditionf("etcd member %s/%s does not answer `etcdctl endpoint status` with the TLS files %s, %s, %s: %v (%s); check --etcdctl, --etcd-cacert, --etcd-cert, --etcd-key, or choose another --member",
			s.Out.HCPNamespace, s.Opts.Member, s.Out.CACert, s.Opts.Etcd.Cert, s.Opts.Etcd.Key, err, firstLine(stderr.String()))
	}
	var status []struct {
		Status struct {
			DBSize int64 `json:"dbSize"`
		} `json:"Status"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &status); err != nil || len(status) == 0 {
		return fmt.Errorf("etcdctl endpoint status in %s: unexpected output: %v", s.Opts.Member, err)
	}
	stdout.Reset()
	stderr.Reset()
	err = s.Clients.Exec.Exec(ctx, s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container,
		[]string{"df", "-Pk", s.Opts.Etcd.SnapshotDir}, nil, &stdout, &stderr)
	if err != nil {
		return exitcode.Preconditionf("cannot read the free space of %s in pod %s: %v (%s); check --snapshot-dir", s.Opts.Etcd.SnapshotDir, s.Opts.Member, err, firstLine(stderr.String()))
	}
	free, err := parseDFAvailable(stdout.String())
	if err != nil {
		return fmt.Errorf("df in pod %s: %w", s.Opts.Member, err)
	}
	s.Out.EtcdDBSize = status[0].Status.DBSize
	need := status[0].Status.DBSize + status[0].Status.DBSize/10
	if free < need {
		return exitcode.Preconditionf("%s in pod %s/%s has %d MiB free, a copy of the %d MiB database needs about %d MiB: stream the snapshot with --via stream (nothing is written in the pod), or free space there, or choose --snapshot-dir", s.Opts.Etcd.SnapshotDir, s.Out.HCPNamespace, s.Opts.Member, free>>20, status[0].Status.DBSize>>20, need>>20)
	}
	return nil
}

// parseDFAvailable reads the available bytes from `df -Pk` output.
func parseDFAvailable(out string) (int64, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		return 0, fmt.Errorf("unexpected df output %q", out)
	}
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 4 {
		return 0, fmt.Errorf("unexpected df output %q", out)
	}
	kb, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("unexpected df output %q", out)
	}
	return kb << 10, nil
}

// ---------------------------------------------------------------------------
// pause-reconciliation and resume-reconciliation

func pause(ctx context.Context, s *State) error {
	hc, err := s.Clients.HyperShift.GetHostedCluster(ctx, s.Opts.Namespace, s.Opts.Cluster)
	if err != nil {
		return err
	}
	// Record the original once: after a crash the current value is our own
	// deadline, and the recorded one must survive.
	if s.Out.PausedUntil == nil {
		s.Out.PausedUntil = &Original{}
		if hc.Spec.PausedUntil != nil {
			s.Out.PausedUntil = &Original{Present: true, Value: *hc.Spec.PausedUntil}
		}
	}
	s.Out.PauseUntil = s.now().Add(s.Opts.PauseTimeout).UTC().Format(time.RFC3339)
	if err := s.Save(ctx); err != nil {
		return err
	}
	if err := setPausedUntil(ctx, s, &s.Out.PauseUntil); err != nil {
		return err
	}
	return waitFor(ctx, s, fmt.Sprintf("HostedControlPlane %s/%s to show the pause", s.Out.HCPNamespace, s.Opts.Cluster), func(ctx context.Context) (bool, error) {
		hcp, err := s.Clients.HyperShift.GetHostedControlPlane(ctx, s.Out.HCPNamespace, s.Opts.Cluster)
		if err != nil {
			return false, ignoreNotFound(err)
		}
		return hcp.Spec.PausedUntil != nil && *hcp.Spec.PausedUntil == s.Out.PauseUntil, nil
	})
}

func resume(ctx context.Context, s *State) error {
	if s.Out.PausedUntil == nil {
		return nil // the pause never recorded anything, so it changed nothing
	}
	hc, err := s.Clients.HyperShift.GetHostedCluster(ctx, s.Opts.Namespace, s.Opts.Cluster)
	if err != nil {
		return err
	}
	cur := hc.Spec.PausedUntil
	orig := s.Out.PausedUntil
	if cur != nil && *cur != s.Out.PauseUntil && !(orig.Present && *cur == orig.Value) {
		log(ctx).Warn("spec.pausedUntil was changed by someone else during the run; leaving it as it is", "value", *cur)
		return nil
	}
	var want *string
	if orig.Present {
		want = &orig.Value
	}
	if err := setPausedUntil(ctx, s, want); err != nil {
		return err
	}
	return waitFor(ctx, s, fmt.Sprintf("HostedControlPlane %s/%s to show the original pausedUntil", s.Out.HCPNamespace, s.Opts.Cluster), func(ctx context.Context) (bool, error) {
		hcp, err := s.Clients.HyperShift.GetHostedControlPlane(ctx, s.Out.HCPNamespace, s.Opts.Cluster)
		if err != nil {
			return false, ignoreNotFound(err)
		}
		if want == nil {
			return hcp.Spec.PausedUntil == nil, nil
		}
		return hcp.Spec.PausedUntil != nil && *hcp.Spec.PausedUntil == *want, nil
	})
}

// setPausedUntil merge-patches spec.pausedUntil to v; nil removes the field
// (absent and "" are different things to HyperShift).
func setPausedUntil(ctx context.Context, s *State, v *string) error {
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"pausedUntil": v}})
	if err != nil {
		return err
	}
	_, err = s.Clients.HyperShift.PatchHostedCluster(ctx, s.Opts.Namespace, s.Opts.Cluster, patch)
	return err
}

// ---------------------------------------------------------------------------
// scale-down-apiservers and scale-up-apiservers

func scaleDown(ctx context.Context, s *State) error {
	if s.Out.Replicas == nil {
		s.Out.Replicas = map[string]int32{}
	}
	deploys := s.Clients.Kube.AppsV1().Deployments(s.Out.HCPNamespace)
	for _, name := range s.Opts.Deployments {
		if _, ok := s.Out.Replicas[name]; ok {
			continue // recorded by an earlier attempt; the current 0 is ours
		}
		scale, err := deploys.GetScale(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read replicas of Deployment %s: %w", name, err)
		}
		s.Out.Replicas[name] = scale.Spec.Replicas
	}
	if s.Out.DowntimeStart == nil || s.Out.DowntimeEnd != nil {
		// A new downtime: the first, or one after a bracket that a failure
		// closed (scale-up ran as an undo and ended the earlier one).
		if s.Out.DowntimeStart != nil {
			s.Out.EarlierDowntimes = append(s.Out.EarlierDowntimes, Window{Start: *s.Out.DowntimeStart, End: *s.Out.DowntimeEnd})
		}
		now := s.now().UTC()
		s.Out.DowntimeStart, s.Out.DowntimeEnd = &now, nil
	}
	if err := s.Save(ctx); err != nil {
		return err
	}
	for _, name := range s.Opts.Deployments {
		if err := scaleTo(ctx, s, name, 0); err != nil {
			return err
		}
	}
	for _, name := range s.Opts.Deployments {
		d, err := deploys.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels).String()
		err = waitFor(ctx, s, fmt.Sprintf("the pods of Deployment %s to be gone", name), func(ctx context.Context) (bool, error) {
			pods, err := s.Clients.Kube.CoreV1().Pods(s.Out.HCPNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil {
				return false, err
			}
			return len(pods.Items) == 0, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func scaleUp(ctx context.Context, s *State) error {
	for _, name := range s.Opts.Deployments {
		want, ok := s.Out.Replicas[name]
		if !ok {
			continue // never scaled down
		}
		if err := scaleTo(ctx, s, name, want); err != nil {
			return err
		}
	}
	for _, name := range s.Opts.Deployments {
		want, ok := s.Out.Replicas[name]
		if !ok {
			continue
		}
		err := waitFor(ctx, s, fmt.Sprintf("Deployment %s to have %d available replicas", name, want), func(ctx context.Context) (bool, error) {
			d, err := s.Clients.Kube.AppsV1().Deployments(s.Out.HCPNamespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas >= want && d.Status.UpdatedReplicas >= want, nil
		})
		if err != nil {
			return err
		}
	}
	if s.Out.DowntimeStart != nil && s.Out.DowntimeEnd == nil {
		now := s.now().UTC()
		s.Out.DowntimeEnd = &now
	}
	// The API is back: a held snapshot stream may go on (holdStream).
	if s.stream != nil {
		s.stream.goOn()
	}
	return nil
}

// scaleTo sets the replicas through the scale subresource, retrying only on
// conflicts, so that it converges whatever the current value.
func scaleTo(ctx context.Context, s *State, name string, replicas int32) error {
	deploys := s.Clients.Kube.AppsV1().Deployments(s.Out.HCPNamespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale, err := deploys.GetScale(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if scale.Spec.Replicas == replicas {
			return nil
		}
		scale.Spec.Replicas = replicas
		_, err = deploys.UpdateScale(ctx, name, scale, metav1.UpdateOptions{FieldManager: "hcpsnap"})
		return err
	})
	if err != nil {
		return fmt.Errorf("scale Deployment %s/%s to %d: %w", s.Out.HCPNamespace, name, replicas, err)
	}
	log(ctx).Info("scaled", "deployment", name, "replicas", replicas)
	return nil
}

// ---------------------------------------------------------------------------
// snapshot-save and cleanup-pod-file

func snapshotSave(ctx context.Context, s *State) error {
	if s.via() == ViaStream {
		return streamSnapshot(ctx, s)
	}
	if err := startSnapshot(ctx, s); err != nil {
		return err
	}
	// Each shard's revision is fixed before the step ends, so before the
	// API comes back: every snapshot is of the same offline state.
	return s.eachShard(ctx, startSnapshot)
}

// startSnapshot starts etcdctl snapshot save in the (shard's) member's pod
// and waits until etcd has fixed the snapshot's revision.
func startSnapshot(ctx context.Context, s *State) error {
	// Every attempt is a new snapshot with outputs of its own: an object
	// uploaded from an earlier one must not pass for it.
	s.Out.Attempt = &Attempt{ID: fmt.Sprintf("%s-%d", s.Run.RunID, s.now().UnixNano()), Via: ViaExec, Path: snapshotPath(s)}
	if err := s.Save(ctx); err != nil {
		return err
	}
	p := s.Out.Attempt.Path
	until := "first-byte"
	if s.Opts.HoldAPIUntilSaved {
		until = "done"
	}
	// Bounded twice: in the pod, where the script stops the writer, and
	// here, a little later, in case the exec itself hangs.
	limit := snapshotTimeout(s)
	ctx, cancel := context.WithTimeout(ctx, limit+30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := append([]string{"sh", "-c", startSnapshotScript, "sh", p, until, strconv.Itoa(int(limit / time.Second))}, etcdctl(s)...)
	if err := s.exec(ctx, cmd, nil, &stderr); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("etcdctl snapshot save %s: no answer from pod %s within %s", p, s.Opts.Member, limit)
		}
		return fmt.Errorf("etcdctl snapshot save %s: %w (%s)", p, err, firstLine(stderr.String()))
	}
	now := s.now().UTC()
	s.Out.Attempt.SavedAt = &now
	if until == "done" {
		log(ctx).Info("snapshot saved", "path", p)
	} else {
		log(ctx).Info("snapshot revision fixed; etcdctl writes the rest while the API comes back", "path", p)
	}
	return nil
}

// snapshotPath derives the snapshot file of the run in the member's pod.
func snapshotPath(s *State) string {
	return SnapshotPath(s.Opts.Etcd.SnapshotDir, s.Run.RunID)
}

// snapshotTimeout bounds snapshot-save: the wait for etcd to fix the
// revision is a wait like any other (--wait-timeout); writing the whole file
// with the API held down must end before the pause deadline.
func snapshotTimeout(s *State) time.Duration {
	d := s.Opts.WaitTimeout
	if s.Opts.HoldAPIUntilSaved && s.Opts.PauseTimeout > 0 {
		d = s.Opts.PauseTimeout
	}
	if d <= 0 {
		d = defaultWaitTimeout
	}
	return max(d, time.Second)
}

// statusCommand is the command that reads the status of the complete
// snapshot file at p, with the tool preflight chose.
func statusCommand(s *State, p string) ([]string, error) {
	switch s.Out.StatusTool {
	case StatusToolEtcdutl:
		return []string{s.Opts.Etcd.etcdutlPath(), "snapshot", "status", p, "-w", "json"}, nil
	case StatusToolEtcdctl:
		return []string{s.Opts.Etcd.Etcdctl, "snapshot", "status", p, "-w", "json"}, nil
	}
	return nil, fmt.Errorf("unknown snapshot status tool %q recorded in the run", s.Out.StatusTool)
}

// snapshotStatus reads the complete file's status with the tool preflight
// chose: `etcdutl snapshot status`, or `etcdctl snapshot status` before
// etcd 3.6. The revision recorded is exactly the one it reports.
func snapshotStatus(ctx context.Context, s *State) error {
	if s.Out.StatusTool == "" {
		// A run checkpointed by a version of hcpsnap whose preflight did
		// not choose: choose now, before reading.
		if err := checkPodTools(ctx, s); err != nil {
			return err
		}
	}
	p := s.Out.Attempt.Path
	cmd, err := statusCommand(s, p)
	if err != nil {
		return err
	}
	what := s.Out.StatusTool + " snapshot status " + p
	var stdout, stderr bytes.Buffer
	if err := s.exec(ctx, cmd, &stdout, &stderr); err != nil {
		return fmt.Errorf("%s: %w (%s)", what, err, firstLine(stderr.String()))
	}
	st := &SnapshotStatus{}
	if err := json.Unmarshal(stdout.Bytes(), st); err != nil {
		return fmt.Errorf("%s: unexpected output %q: %w", what, firstLine(stdout.String()), err)
	}
	if st.Revision <= 0 || st.TotalSize <= 0 {
		return fmt.Errorf("%s: no revision or size in %q", what, firstLine(stdout.String()))
	}
	s.Out.Attempt.Status = st
	return nil
}

func cleanupPodFile(ctx context.Context, s *State) error {
	if s.via() == ViaStream {
		return cleanupStream(ctx, s)
	}
	// Every member is cleaned up, also when another's clean-up failed.
	errs := []error{cleanupMemberFile(ctx, s)}
	for i := range s.Out.Shards {
		if s.Out.Shards[i].Attempt == nil {
			continue // its snapshot never started
		}
		if err := s.eachShardAt(ctx, i, cleanupMemberFile); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cleanupMemberFile removes the snapshot files from the (shard's) member's pod.
func cleanupMemberFile(ctx context.Context, s *State) error {
	p := snapshotPath(s)
	var stderr bytes.Buffer
	// Stop etcdctl if it still writes, then remove the file, etcdctl's
	// <path>.part and the writer's own files.
	if err := s.exec(ctx, []string{"sh", "-c", cleanupScript, "sh", p}, nil, &stderr); err != nil {
		return fmt.Errorf("remove %s from pod %s/%s: %w (%s); remove it by hand with: %s",
			p, s.Out.HCPNamespace, s.Opts.Member, err, firstLine(stderr.String()), RemoveSnapshotCommand(s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container, p))
	}
	return nil
}

// ---------------------------------------------------------------------------
// helpers

// objectKey places an object of this backup under prefix.
func objectKey(prefix, cluster, timestamp, name string) string {
	return strings.TrimPrefix(path.Join(prefix, cluster, timestamp, name), "/")
}

// exec runs cmd in the member's container; a nil buffer discards that stream.
func (s *State) exec(ctx context.Context, cmd []string, stdout, stderr *bytes.Buffer) error {
	var out, errw io.Writer = io.Discard, io.Discard
	if stdout != nil {
		out = stdout
	}
	if stderr != nil {
		errw = stderr
	}
	return s.Clients.Exec.Exec(ctx, s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container, cmd, nil, out, errw)
}

// log returns the context's logger, which carries the step field.
func log(ctx context.Context) *charmlog.Logger { return charmlog.FromContext(ctx) }

func waitFor(ctx context.Context, s *State, what string, cond func(context.Context) (bool, error)) error {
	timeout := s.Opts.WaitTimeout
	if timeout <= 0 {
		timeout = defaultWaitTimeout
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, pollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		done, err := cond(ctx)
		if err != nil && kube.Transient(err) {
			// The apiserver restarting or overloaded is no answer: poll on.
			last = err
			return false, nil
		}
		return done, err
	})
	if err != nil && last != nil && wait.Interrupted(err) && ctx.Err() == nil {
		return fmt.Errorf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
	}
	if err != nil && ctx.Err() == nil && wait.Interrupted(err) {
		return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
	}
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
