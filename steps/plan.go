package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/shell"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/runbook"
)

// The plans below describe each step for the --dry-run runbook. They read
// the real cluster to show real values and record what later plans need in
// the in-memory outputs, but change nothing: a dry run has no Saver and its
// clients refuse writes.

func planPreflight(ctx context.Context, s *State) (Plan, error) {
	hc, err := inspect(ctx, s)
	if err != nil {
		return Plan{}, err
	}
	if err := checkPausedUntil(hc.Spec.PausedUntil); err != nil {
		return Plan{}, err
	}
	pod, err := s.Clients.Kube.CoreV1().Pods(s.Out.HCPNamespace).Get(ctx, s.Opts.Member, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Plan{}, fmt.Errorf("etcd pod %s not found in namespace %s: choose a member with --member", s.Opts.Member, s.Out.HCPNamespace)
	}
	if err != nil {
		return Plan{}, err
	}
	if err := checkMemberPod(pod, s.Opts.Container); err != nil {
		return Plan{}, err
	}
	s.Out.CACert = detectCACert(pod, s.Opts)
	version := s.Out.OpenShiftVersion
	if version == "" {
		version = "unknown"
	}
	if s.via() == ViaStream {
		return withShardsNote(ctx, planPreflightStream(s, version), s)
	}
	p := Plan{Actions: []string{
		fmt.Sprintf("HostedCluster %s/%s has managed etcd (infraID %s, OpenShift %s)", s.Opts.Namespace, s.Opts.Cluster, s.Out.InfraID, version),
		fmt.Sprintf("etcd member %s/%s (container %s) is Running and Ready; CA file %s", s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container, s.Out.CACert),
		fmt.Sprintf("check in one exec that the container has %s and %s, and choose what reads the snapshot's status: %s when present, else etcdctl if older than 3.6 (3.6 removed `etcdctl snapshot status`)",
			strings.Join(podPrograms, ", "), s.Opts.Etcd.Etcdctl, s.Opts.Etcd.etcdutlPath()),
		fmt.Sprintf("check that %s has room for the snapshot and that bucket %s accepts writes under %q", s.Opts.Etcd.SnapshotDir, s.Opts.Bucket, s.Opts.Prefix),
	}, Commands: []string{
		shell.Join("oc", "get", "hostedcluster", "-n", s.Opts.Namespace, s.Opts.Cluster, "-o", "jsonpath={.spec.etcd.managementType}"),
		shell.Join("oc", "get", "pod", "-n", s.Out.HCPNamespace, s.Opts.Member),
		s.ocExec("sh", "-c", "command -v "+strings.Join(podPrograms, " ")+" && "+shell.Join(s.Opts.Etcd.Etcdctl, "version")+" && "+shell.Join("ls", "-l", s.Opts.Etcd.etcdutlPath())),
		s.ocExec(etcdctl(s, "endpoint", "health")...),
		s.ocExec("df", "-h", s.Opts.Etcd.SnapshotDir),
		shell.Join("aws", "s3", "ls", "s3://"+s.Opts.Bucket+"/"+s.Opts.Prefix),
	}}
	if !s.Opts.Online {
		p.Commands = append(p.Commands, shell.Join(append([]string{"oc", "get", "deployment", "-n", s.Out.HCPNamespace}, s.Opts.Deployments...)...))
	}
	return withShardsNote(ctx, p, s)
}

// withShardsNote adds to the preflight plan the HostedCluster's etcd
// shards: each shard's member pod, checked as the default member's, or the
// shards the backup leaves out (--without-shards), and the command that
// shows them.
func withShardsNote(ctx context.Context, p Plan, s *State) (Plan, error) {
	p.Commands = append(p.Commands, shell.Join("oc", "get", "hostedcluster", "-n", s.Opts.Namespace, s.Opts.Cluster, "-o", "jsonpath={.spec.etcd.managed.shards}"))
	switch {
	case len(s.Out.MissingShards) > 0:
		p.Actions = append(p.Actions, fmt.Sprintf("NOT backed up (--without-shards): etcd shards %s; the backup holds the default member only, and the manifest names these shards as missing",
			manifest.DescribeShards(s.Out.MissingShards)))
	case len(s.Out.Shards) == 0:
		p.Actions = append(p.Actions, "check that the HostedCluster has no etcd shards (spec.etcd.managed.shards): their data would not be in a backup of the default member")
	}
	for i, sh := range s.Out.Shards {
		v := s.onShard(i)
		pod, err := v.Clients.Kube.CoreV1().Pods(v.Out.HCPNamespace).Get(ctx, v.Opts.Member, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return Plan{}, exitcode.Preconditionf("etcd shard %s: etcd pod %s not found in namespace %s: check the shard's StatefulSet, or back up the default member alone with --without-shards", sh.Shard.Name, v.Opts.Member, v.Out.HCPNamespace)
		}
		if err != nil {
			return Plan{}, err
		}
		if err := checkMemberPod(pod, v.Opts.Container); err != nil {
			return Plan{}, err
		}
		p.Actions = append(p.Actions, fmt.Sprintf("etcd shard %s: member %s/%s is Running and Ready; its snapshot is taken in the same offline window as the default member's; check etcdctl and the room in %s there too",
			sh.Shard.Describe(), v.Out.HCPNamespace, v.Opts.Member, v.Opts.Etcd.SnapshotDir))
		p.Commands = append(p.Commands, v.ocExec(etcdctl(v, "endpoint", "health")...), v.ocExec("df", "-h", v.Opts.Etcd.SnapshotDir))
	}
	return p, nil
}

// withShardPlans appends to p the plan fn makes for each etcd shard's
// member, its actions marked with the shard's name.
func withShardPlans(ctx context.Context, s *State, p Plan, fn func(context.Context, *State) (Plan, error)) (Plan, error) {
	for i, sh := range s.Out.Shards {
		sp, err := fn(ctx, s.onShard(i))
		if err != nil {
			return Plan{}, fmt.Errorf("etcd shard %s: %w", sh.Shard.Name, err)
		}
		for _, a := range sp.Actions {
			p.Actions = append(p.Actions, "etcd shard "+sh.Shard.Name+": "+a)
		}
		p.Commands = append(p.Commands, sp.Commands...)
	}
	return p, nil
}

func planPause(ctx context.Context, s *State) (Plan, error) {
	hc, err := s.Clients.HyperShift.GetHostedCluster(ctx, s.Opts.Namespace, s.Opts.Cluster)
	if err != nil {
		return Plan{}, err
	}
	cur := "absent"
	s.Out.PausedUntil = &Original{}
	if hc.Spec.PausedUntil != nil {
		cur = fmt.Sprintf("%q", *hc.Spec.PausedUntil)
		s.Out.PausedUntil = &Original{Present: true, Value: *hc.Spec.PausedUntil}
	}
	deadline := fmt.Sprintf("<now + %s>", s.Opts.PauseTimeout)
	return Plan{Actions: []string{
		fmt.Sprintf("record spec.pausedUntil of HostedCluster %s/%s (now %s)", s.Opts.Namespace, s.Opts.Cluster, cur),
		fmt.Sprintf("set it to the RFC3339 time %s, so that reconciliation resumes by itself if hcpsnap is lost", deadline),
		fmt.Sprintf("wait until HostedControlPlane %s/%s shows the same value", s.Out.HCPNamespace, s.Opts.Cluster),
	}, Commands: []string{
		// The deadline is computed by the shell when the command runs, so
		// the patch is shell syntax on purpose; only the names are quoted.
		shell.Join("oc", "patch", "hostedcluster", "-n", s.Opts.Namespace, s.Opts.Cluster, "--type=merge", "-p") +
			fmt.Sprintf(` '{"spec":{"pausedUntil":"'"$(date -u -d '+%d seconds' +%%Y-%%m-%%dT%%H:%%M:%%SZ)"'"}}'`, int(s.Opts.PauseTimeout.Seconds())),
		shell.Join("oc", "get", "hostedcontrolplane", "-n", s.Out.HCPNamespace, s.Opts.Cluster, "-o", "jsonpath={.spec.pausedUntil}"),
	}}, nil
}

func planScaleDown(ctx context.Context, s *State) (Plan, error) {
	s.Out.Replicas = map[string]int32{}
	var actions []string
	for _, name := range s.Opts.Deployments {
		scale, err := s.Clients.Kube.AppsV1().Deployments(s.Out.HCPNamespace).GetScale(ctx, name, metav1.GetOptions{})
		if err != nil {
			return Plan{}, fmt.Errorf("Deployment %s/%s: %w", s.Out.HCPNamespace, name, err)
		}
		s.Out.Replicas[name] = scale.Spec.Replicas
		actions = append(actions, fmt.Sprintf("record %s replicas (%d) and scale it to 0", name, scale.Spec.Replicas))
	}
	actions = append(actions, "wait until their pods are gone: the hosted cluster's API is down from here")
	return Plan{Actions: actions, Commands: []string{
		shell.Join(append(append([]string{"oc", "scale", "deployment", "-n", s.Out.HCPNamespace}, s.Opts.Deployments...), "--replicas=0")...),
		shell.Join("oc", "wait", "pod", "-n", s.Out.HCPNamespace, "--for=delete", "-l", "app in ("+strings.Join(s.Opts.Deployments, ",")+")", "--timeout="+s.waitTimeout()),
	}}, nil
}

func planSnapshotSave(ctx context.Context, s *State) (Plan, error) {
	if s.via() == ViaStream {
		return planSnapshotStream(s), nil
	}
	p, err := planStartSnapshot(ctx, s)
	if err != nil {
		return Plan{}, err
	}
	return withShardPlans(ctx, s, p, planStartSnapshot)
}

func planStartSnapshot(_ context.Context, s *State) (Plan, error) {
	p := snapshotPath(s)
	wait := fmt.Sprintf("wait until its first byte is in %s.part: etcd has then fixed the snapshot's revision, and etcdctl writes the rest while the API comes back", p)
	if s.Opts.HoldAPIUntilSaved {
		wait = fmt.Sprintf("wait until etcdctl has written and renamed the complete file %s", p)
	}
	return Plan{Actions: []string{
		fmt.Sprintf("start `etcdctl snapshot save %s` of member %s in the background inside the pod (output in %s.log, status in %s.rc)", p, s.Opts.Member, p, p),
		wait,
	}, Commands: []string{
		s.ocExec("sh", "-c", fmt.Sprintf("nohup env ETCDCTL_API=3 %s >%s 2>&1 </dev/null &", shell.Join(etcdctl(s, "snapshot", "save", p)...), shell.Quote(p+".log"))),
		s.ocExec("stat", "-c", "%s", p+".part"),
	}}, nil
}

func planScaleUp(_ context.Context, s *State) (Plan, error) {
	byCount := map[int32][]string{}
	var actions []string
	for _, name := range s.Opts.Deployments {
		n := s.Out.Replicas[name]
		byCount[n] = append(byCount[n], name)
		actions = append(actions, fmt.Sprintf("scale %s back to %d and wait until it is available", name, n))
	}
	counts := make([]int, 0, len(byCount))
	for n := range byCount {
		counts = append(counts, int(n))
	}
	sort.Ints(counts)
	var cmds []string
	for _, n := range counts {
		cmds = append(cmds, shell.Join(append(append([]string{"oc", "scale", "deployment", "-n", s.Out.HCPNamespace}, byCount[int32(n)]...), fmt.Sprintf("--replicas=%d", n))...))
	}
	for _, name := range s.Opts.Deployments {
		cmds = append(cmds, shell.Join("oc", "rollout", "status", "deployment", "-n", s.Out.HCPNamespace, name, "--timeout="+s.waitTimeout()))
	}
	actions = append(actions, "the API is back: the downtime ends here, before the upload")
	return Plan{Actions: actions, Commands: cmds}, nil
}

func planResume(_ context.Context, s *State) (Plan, error) {
	o := s.Out.PausedUntil
	if o == nil || !o.Present {
		return Plan{Actions: []string{"remove spec.pausedUntil (it was absent)"}, Commands: []string{
			PausedUntilCommand(s.Opts.Namespace, s.Opts.Cluster, nil),
		}}, nil
	}
	return Plan{Actions: []string{fmt.Sprintf("set spec.pausedUntil back to %q", o.Value)}, Commands: []string{
		PausedUntilCommand(s.Opts.Namespace, s.Opts.Cluster, &o.Value),
	}}, nil
}

func planUpload(ctx context.Context, s *State) (Plan, error) {
	if s.via() == ViaStream {
		return planUploadStream(s), nil
	}
	p, err := planUploadMember(ctx, s)
	if err != nil {
		return Plan{}, err
	}
	return withShardPlans(ctx, s, p, planUploadMember)
}

func planUploadMember(_ context.Context, s *State) (Plan, error) {
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, s.snapshotObject())
	// A dry run cannot exec, so preflight's choice is unknown there: show
	// etcdutl, which every etcd image of OpenShift 4.12 and later has.
	tool := s.Out.StatusTool
	if tool == "" {
		tool = StatusToolEtcdutl
	}
	planned := *s
	planned.Out = &Outputs{StatusTool: tool}
	status, err := statusCommand(&planned, snapshotPath(s))
	if err != nil {
		return Plan{}, err
	}
	by := fmt.Sprintf("`%s snapshot status`", tool)
	if s.Out.StatusTool == "" {
		by += " (`etcdctl snapshot status` when the container has no etcdutl and its etcdctl is older than 3.6; preflight chooses)"
	}
	return Plan{Actions: []string{
		fmt.Sprintf("stream %s out of the pod into s3://%s/%s with a SigV4 multipart upload (per-part CRC32C checked by S3), reading each range as soon as etcdctl has written it", snapshotPath(s), s.Opts.Bucket, key),
		"verify etcd's trailing SHA-256 while streaming; abort the upload on any error or when etcdctl fails; skip it if this snapshot is already there",
		"record the snapshot's revision, key count, size and hash with " + by,
	}, Commands: []string{
		s.ocExec("cat", snapshotPath(s)) + " | " + shell.Join("aws", "s3", "cp", "-", "s3://"+s.Opts.Bucket+"/"+key, "--checksum-algorithm", "CRC32C"),
		s.ocExec(status...),
	}}, nil
}

func planSaveKeys(ctx context.Context, s *State) (Plan, error) {
	refs, encryption, err := keySecrets(ctx, s)
	if err != nil {
		return Plan{}, err
	}
	var actions, cmds []string
	if encryption != nil && encryption.KMS != nil {
		actions = append(actions, fmt.Sprintf("no AES key to save: Secrets are encrypted with %s KMS key %s; record the KMS keys and roles (identifiers only) in the manifest",
			encryption.KMS.Provider, encryption.KMS.ActiveKey().ID))
	}
	for _, r := range refs {
		_, err := s.Clients.Kube.CoreV1().Secrets(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) && !r.Required:
			actions = append(actions, fmt.Sprintf("skip Secret %s/%s (%s): not found", r.Namespace, r.Name, r.Role))
			continue
		case apierrors.IsNotFound(err):
			return Plan{}, fmt.Errorf("Secret %s/%s named by the HostedCluster's secretEncryption not found", r.Namespace, r.Name)
		case err != nil:
			return Plan{}, err
		}
		actions = append(actions, fmt.Sprintf("save Secret %s/%s (%s)", r.Namespace, r.Name, r.Role))
		cmds = append(cmds, shell.Join("oc", "get", "secret", "-n", r.Namespace, r.Name, "-o", "json"))
	}
	actions = append(actions, "to "+keyBundleDestination(s)+"; values are never printed")
	return Plan{Actions: actions, Commands: cmds}, nil
}

func planCleanupPodFile(ctx context.Context, s *State) (Plan, error) {
	if s.via() == ViaStream {
		return Plan{Actions: []string{"nothing was written in the pod; after a failure or Ctrl-C, stop the stream and abort its unfinished multipart upload"}}, nil
	}
	p, err := planCleanupMember(ctx, s)
	if err != nil {
		return Plan{}, err
	}
	return withShardPlans(ctx, s, p, planCleanupMember)
}

func planCleanupMember(_ context.Context, s *State) (Plan, error) {
	return Plan{Actions: []string{fmt.Sprintf("stop etcdctl if it still writes, and remove %s and its .part, .log, .pid, .rc files from pod %s (also after a failure)", snapshotPath(s), s.Opts.Member)},
		Commands: []string{RemoveSnapshotCommand(s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container, snapshotPath(s))}}, nil
}

func planWriteManifest(_ context.Context, s *State) (Plan, error) {
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, manifestObjectName)
	what := "cluster, infraID, OpenShift version, etcd revision/keys/size/hash, SHA-256, object keys, times, downtime"
	if len(s.Out.Shards) > 0 {
		what += fmt.Sprintf(", and the same for each of the %d etcd shard snapshots (manifest schema version %d: older hcpsnap versions refuse it rather than restore the default member alone)", len(s.Out.Shards), manifest.SchemaVersionShards)
	}
	return Plan{Actions: []string{fmt.Sprintf("write s3://%s/%s: %s", s.Opts.Bucket, key, what)}}, nil
}

// ocExec renders an `oc exec` into the member's container.
func (s *State) ocExec(cmd ...string) string {
	return ocExec(s.Out.HCPNamespace, s.Opts.Member, s.Opts.Container, cmd...)
}

func ocExec(namespace, pod, container string, cmd ...string) string {
	return shell.Join(append([]string{"oc", "exec", "-n", namespace, pod, "-c", container, "--"}, cmd...)...)
}

// RemoveSnapshotCommand is the command that removes the snapshot files of
// path from the member's pod by hand, as cleanup-pod-file does.
func RemoveSnapshotCommand(namespace, pod, container, path string) string {
	return ocExec(namespace, pod, container, "sh", "-c", "rm -f "+shell.Quote(path)+" "+shell.Quote(path)+".*")
}

// PausedUntilCommand is the command that sets spec.pausedUntil of a
// HostedCluster to *v, or removes it when v is nil.
func PausedUntilCommand(namespace, name string, v *string) string {
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"pausedUntil": v}})
	return shell.Join("oc", "patch", "hostedcluster", "-n", namespace, name, "--type=merge", "-p", string(patch))
}

// BackupCommand is `hcpsnap backup` of the cluster with one more flag
// (--resume, --abandon), as error messages suggest it.
func BackupCommand(c checkpoint.Cluster, flag string) string {
	return runbook.Command("backup", c, flag)
}

// ScaleCommand is the command that scales a Deployment to n replicas.
func ScaleCommand(namespace, name string, n int32) string {
	return shell.Join("oc", "scale", "deployment", "-n", namespace, name, fmt.Sprintf("--replicas=%d", n))
}

func (s *State) waitTimeout() string {
	if s.Opts.WaitTimeout > 0 {
		return s.Opts.WaitTimeout.String()
	}
	return defaultWaitTimeout.String()
}

// The plans of --via stream. Their commands are the manual equivalent a
// reviewer can run: a port-forward and etcdctl on the operator's machine
// (which, unlike hcpsnap, write the client key and the snapshot to local
// files).

// localPort is the local end of the port-forward in the manual commands.
const localPort = "12379"

func (s *State) streamEtcdctl(args ...string) string {
	return shell.Join(append([]string{"etcdctl", "--cacert", "etcd-ca/ca.crt", "--cert", "etcd-client-tls/etcd-client.crt",
		"--key", "etcd-client-tls/etcd-client.key", "--endpoints", "https://localhost:" + localPort}, args...)...)
}

func planPreflightStream(s *State, version string) Plan {
	p := Plan{Actions: []string{
		fmt.Sprintf("HostedCluster %s/%s has managed etcd (infraID %s, OpenShift %s)", s.Opts.Namespace, s.Opts.Cluster, s.Out.InfraID, version),
		fmt.Sprintf("etcd member %s/%s is Running and Ready", s.Out.HCPNamespace, s.Opts.Member),
		fmt.Sprintf("reach its etcd through the apiserver's port-forward to port 2379, with the client certificate of Secret %s/etcd-client-tls and the CA of ConfigMap etcd-ca (server name localhost), held in memory only; read the database size", s.Out.HCPNamespace),
		fmt.Sprintf("check that bucket %s accepts writes under %q", s.Opts.Bucket, s.Opts.Prefix),
	}, Commands: []string{
		shell.Join("oc", "get", "hostedcluster", "-n", s.Opts.Namespace, s.Opts.Cluster, "-o", "jsonpath={.spec.etcd.managementType}"),
		shell.Join("oc", "get", "pod", "-n", s.Out.HCPNamespace, s.Opts.Member),
		shell.Join("oc", "extract", "-n", s.Out.HCPNamespace, "secret/etcd-client-tls", "--to=etcd-client-tls"),
		shell.Join("oc", "extract", "-n", s.Out.HCPNamespace, "configmap/etcd-ca", "--to=etcd-ca"),
		shell.Join("oc", "port-forward", "-n", s.Out.HCPNamespace, "pod/"+s.Opts.Member, localPort+":2379") + " &",
		s.streamEtcdctl("endpoint", "status", "-w", "table"),
		shell.Join("aws", "s3", "ls", "s3://"+s.Opts.Bucket+"/"+s.Opts.Prefix),
	}}
	if !s.Opts.Online {
		p.Commands = append(p.Commands, shell.Join(append([]string{"oc", "get", "deployment", "-n", s.Out.HCPNamespace}, s.Opts.Deployments...)...))
	}
	return p
}

func planSnapshotStream(s *State) Plan {
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, snapshotObjectName)
	wait := "wait for its first bytes: etcd has then opened the read transaction the snapshot is taken from; the stream goes on into the bucket once the API is back (end of scale-up), so that it does not slow the API servers' start"
	if s.Opts.Online {
		wait = "wait for its first bytes: etcd has then opened the read transaction the snapshot is taken from; the stream goes on into the bucket"
	}
	if s.Opts.HoldAPIUntilSaved {
		wait = "wait until the whole stream is in the bucket, verified"
	}
	return Plan{Actions: []string{
		fmt.Sprintf("open etcd's snapshot stream (Maintenance.Snapshot) on member %s through port-forward and pipe it into a SigV4 multipart upload to s3://%s/%s; nothing is written in the pod", s.Opts.Member, s.Opts.Bucket, key),
		wait,
	}, Commands: []string{
		s.streamEtcdctl("snapshot", "save", "snapshot.db"),
	}}
}

func planUploadStream(s *State) Plan {
	key := objectKey(s.Opts.Prefix, s.Opts.Cluster, s.Out.Timestamp, snapshotObjectName)
	return Plan{Actions: []string{
		fmt.Sprintf("wait until the stream is in s3://%s/%s (per-part CRC32C checked by S3); verify etcd's trailing SHA-256 before the upload is completed, abort it on any error", s.Opts.Bucket, key),
		fmt.Sprintf("a broken stream cannot go on where it stopped: take a new snapshot (offline, the API goes down again), at most %d times", s.Opts.SnapshotRetries),
		"record the snapshot's revision, size and storage version as `etcdutl snapshot status` reports them, read from the stream as it passes and a few ranged reads of the object",
	}, Commands: []string{
		shell.Join("aws", "s3", "cp", "snapshot.db", "s3://"+s.Opts.Bucket+"/"+key, "--checksum-algorithm", "CRC32C"),
		shell.Join("etcdutl", "snapshot", "status", "snapshot.db", "-w", "json"),
	}}
}
