package steps_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	charmlog "github.com/charmbracelet/log"
	configv1 "github.com/openshift/api/config/v1"
	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/runbook"
	"github.com/hcpsnap/hcpsnap/steps"
)

const (
	ns        = "clusters"
	cluster   = "example"
	hcpNS     = "clusters-example"
	activeKey = "example-etcd-encryption-key"
	backupKey = "example-etcd-encryption-key-previous"
	// The fake AWS credentials: in the environment and in a Secret of the
	// control plane namespace. Neither may reach a runbook.
	fakeAWSKeyID  = "AKIAIOSFODNN7EXAMPLE"
	fakeAWSSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

var (
	now      = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	stamp    = "20250314T092653Z"
	replicas = map[string]int32{"kube-apiserver": 3, "openshift-apiserver": 2, "openshift-oauth-apiserver": 1}
	// secretData are the values of every fake Secret.
	secretData = map[string]string{
		activeKey:        "aes-active-key-value-0123456789abcdef",
		backupKey:        "aes-backup-key-value-fedcba9876543210",
		"root-ca":        "root-ca-private-key-value",
		"etcd-signer":    "etcd-signer-private-key-value",
		"sa-signing-key": "sa-signing-private-key-value",
		"aws-creds":      fakeAWSSecret,
	}
	hcGR = hyperv1.GroupVersion.WithResource("hostedclusters").GroupResource()
)

// readOnlyHyperShift serves one HostedCluster and its control plane and
// counts any attempt to change them.
type readOnlyHyperShift struct {
	mu     sync.Mutex
	hc     *hyperv1.HostedCluster
	hcp    *hyperv1.HostedControlPlane
	shards []kube.EtcdShard
	writes int
}

var _ steps.HyperShift = (*readOnlyHyperShift)(nil)

func (f *readOnlyHyperShift) GetHostedCluster(_ context.Context, namespace, name string) (*hyperv1.HostedCluster, error) {
	if f.hc == nil || namespace != f.hc.Namespace || name != f.hc.Name {
		return nil, apierrors.NewNotFound(hcGR, name)
	}
	return f.hc.DeepCopy(), nil
}

func (f *readOnlyHyperShift) GetEtcdShards(_ context.Context, namespace, name string) ([]kube.EtcdShard, error) {
	if f.hc == nil || namespace != f.hc.Namespace || name != f.hc.Name {
		return nil, apierrors.NewNotFound(hcGR, name)
	}
	return f.shards, nil
}

func (f *readOnlyHyperShift) PatchHostedCluster(context.Context, string, string, []byte) (*hyperv1.HostedCluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	return nil, fmt.Errorf("a runbook must not patch")
}

func (f *readOnlyHyperShift) GetHostedControlPlane(_ context.Context, namespace, name string) (*hyperv1.HostedControlPlane, error) {
	if namespace != f.hcp.Namespace || name != f.hcp.Name {
		return nil, apierrors.NewNotFound(hcGR, name)
	}
	return f.hcp.DeepCopy(), nil
}

func newWorld(t *testing.T, pausedUntil *string) (*fake.Clientset, *readOnlyHyperShift) {
	t.Helper()
	var objs []runtime.Object
	for name, n := range replicas {
		objs = append(objs, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: hcpNS},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(n), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}},
		})
	}
	objs = append(objs, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd-0", Namespace: hcpNS},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "etcd", VolumeMounts: []corev1.VolumeMount{
			{Name: "etcd-ca", MountPath: "/etc/etcd/tls/etcd-ca"}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	})
	for name, v := range secretData {
		sns := hcpNS
		if name == activeKey || name == backupKey {
			sns = ns
		}
		objs = append(objs, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: sns},
			Data: map[string][]byte{"key": []byte(v)}, StringData: map[string]string{"id": fakeAWSKeyID}})
	}
	cs := fake.NewClientset(objs...)
	tracker := cs.Tracker()
	cs.PrependReactor("get", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ga := a.(k8stesting.GetAction)
		if ga.GetSubresource() != "scale" {
			return false, nil, nil
		}
		obj, err := tracker.Get(appsv1.SchemeGroupVersion.WithResource("deployments"), ga.GetNamespace(), ga.GetName())
		if err != nil {
			return true, nil, err
		}
		d := obj.(*appsv1.Deployment)
		return true, &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace},
			Spec: autoscalingv1.ScaleSpec{Replicas: *d.Spec.Replicas}}, nil
	})
	hs := &readOnlyHyperShift{
		hc: &hyperv1.HostedCluster{
			ObjectMeta: metav1.ObjectMeta{Name: cluster, Namespace: ns},
			Spec: hyperv1.HostedClusterSpec{
				InfraID:     "example-x7k2p",
				PausedUntil: pausedUntil,
				Etcd:        hyperv1.EtcdSpec{ManagementType: hyperv1.Managed},
				SecretEncryption: &hyperv1.SecretEncryptionSpec{Type: hyperv1.AESCBC, AESCBC: &hyperv1.AESCBCSpec{
					ActiveKey: corev1.LocalObjectReference{Name: activeKey},
					BackupKey: &corev1.LocalObjectReference{Name: backupKey},
				}},
			},
			Status: hyperv1.HostedClusterStatus{Version: &hyperv1.ClusterVersionStatus{
				Desired: configv1.Release{Version: "4.17.3"},
				History: []configv1.UpdateHistory{{State: configv1.CompletedUpdate, Version: "4.17.3"}},
			}},
		},
		hcp: &hyperv1.HostedControlPlane{ObjectMeta: metav1.ObjectMeta{Name: cluster, Namespace: hcpNS}},
	}
	return cs, hs
}

func options() steps.Options {
	return steps.Options{
		Cluster: cluster, Namespace: ns, Bucket: "hcpsnap-backups", Prefix: "backups", KeyPrefix: "hcpsnap-keys",
		Member: "etcd-0", Container: "etcd", Deployments: slices.Clone(steps.DefaultDeployments),
		PauseTimeout: 30 * time.Minute, WaitTimeout: 5 * time.Minute,
		Etcd: steps.EtcdOptions{Etcdctl: steps.DefaultEtcdctl, Endpoint: steps.DefaultEndpoint,
			Cert: steps.DefaultClientCert, Key: steps.DefaultClientKey, SnapshotDir: steps.DefaultSnapshotDir},
	}
}

func TestBuild(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", fakeAWSKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", fakeAWSSecret)
	snapKey := "backups/example/" + stamp + "/snapshot.db"
	keysKey := "hcpsnap-keys/example/" + stamp + "/key-bundle.json"
	manKey := "backups/example/" + stamp + "/manifest.json"
	tests := []struct {
		name        string
		pausedUntil *string
		opts        func(*steps.Options)
		wantSkipped []string
		// want maps a step to substrings its actions and commands hold.
		want map[string][]string
	}{
		{
			name: "offline backup to the bucket",
			want: map[string][]string{
				steps.StepPreflight: {"HostedCluster clusters/example has managed etcd (infraID example-x7k2p, OpenShift 4.17.3)",
					"etcd member clusters-example/etcd-0 (container etcd) is Running and Ready; CA file " + steps.CACertPath,
					"oc get deployment -n clusters-example kube-apiserver openshift-apiserver openshift-oauth-apiserver"},
				steps.StepPause: {"record spec.pausedUntil of HostedCluster clusters/example (now absent)",
					"oc patch hostedcluster -n clusters example --type=merge"},
				steps.StepScaleDown: {"record kube-apiserver replicas (3) and scale it to 0",
					"record openshift-apiserver replicas (2) and scale it to 0",
					"record openshift-oauth-apiserver replicas (1) and scale it to 0",
					"oc scale deployment -n clusters-example kube-apiserver openshift-apiserver openshift-oauth-apiserver --replicas=0"},
				steps.StepSnapshotSave: {"start `etcdctl snapshot save /var/lib/data/hcpsnap-",
					"wait until its first byte is in /var/lib/data/hcpsnap-",
					"oc exec -n clusters-example etcd-0 -c etcd -- sh -c 'nohup env ETCDCTL_API=3 /usr/bin/etcdctl --cacert " + steps.CACertPath},
				steps.StepScaleUp: {"scale kube-apiserver back to 3", "scale openshift-apiserver back to 2", "scale openshift-oauth-apiserver back to 1",
					"oc scale deployment -n clusters-example openshift-oauth-apiserver --replicas=1",
					"oc scale deployment -n clusters-example openshift-apiserver --replicas=2",
					"oc scale deployment -n clusters-example kube-apiserver --replicas=3"},
				steps.StepResume: {"remove spec.pausedUntil (it was absent)", `{"spec":{"pausedUntil":null}}`},
				steps.StepSaveKeys: {"save Secret clusters/" + activeKey + " (aescbc-active-key)",
					"save Secret clusters/" + backupKey + " (aescbc-backup-key)",
					"save Secret clusters-example/root-ca (control-plane)",
					"save Secret clusters-example/etcd-signer (control-plane)",
					"save Secret clusters-example/sa-signing-key (control-plane)",
					"to s3://hcpsnap-backups/" + keysKey + " (server-side encryption: aws:kms)"},
				steps.StepUpload:         {"s3://hcpsnap-backups/" + snapKey, "snapshot status /var/lib/data/hcpsnap-"},
				steps.StepCleanupPodFile: {"rm -f /var/lib/data/hcpsnap-"},
				steps.StepWriteManifest:  {"s3://hcpsnap-backups/" + manKey},
			},
			opts: func(o *steps.Options) { o.SSE = "aws:kms" },
		},
		{
			name:        "paused until true, key bundle to a file, clean-up skipped",
			pausedUntil: ptr.To("true"),
			opts: func(o *steps.Options) {
				o.KeyOut = filepath.Join("/secure", "keys.json")
				o.SkipSteps = []string{steps.StepCleanupPodFile}
			},
			wantSkipped: []string{steps.StepCleanupPodFile},
			want: map[string][]string{
				steps.StepPause:    {`(now "true")`},
				steps.StepResume:   {`set spec.pausedUntil back to "true"`},
				steps.StepSaveKeys: {"to local file /secure/keys.json (mode 0600)"},
			},
		},
		{
			name:        "online: no pause, no scaling",
			opts:        func(o *steps.Options) { o.Online = true },
			wantSkipped: []string{steps.StepPause, steps.StepScaleDown, steps.StepScaleUp, steps.StepResume},
			want: map[string][]string{
				steps.StepSnapshotSave: {"snapshot save /var/lib/data/hcpsnap-"},
				steps.StepUpload:       {"s3://hcpsnap-backups/" + snapKey},
			},
		},
		{
			name: "streamed: port-forward and etcd's snapshot API, nothing in the pod",
			opts: func(o *steps.Options) { o.Via, o.SnapshotRetries = steps.ViaStream, 2 },
			want: map[string][]string{
				steps.StepPreflight: {"reach its etcd through the apiserver's port-forward to port 2379",
					"oc port-forward -n clusters-example pod/etcd-0 12379:2379 &",
					"oc extract -n clusters-example secret/etcd-client-tls --to=etcd-client-tls"},
				steps.StepSnapshotSave:   {"open etcd's snapshot stream (Maintenance.Snapshot) on member etcd-0", "s3://hcpsnap-backups/" + snapKey, "wait for its first bytes"},
				steps.StepUpload:         {"verify etcd's trailing SHA-256 before the upload is completed", "at most 2 times"},
				steps.StepCleanupPodFile: {"nothing was written in the pod"},
			},
		},
		{
			name: "API held down until the snapshot file is complete",
			opts: func(o *steps.Options) { o.HoldAPIUntilSaved = true },
			want: map[string][]string{
				steps.StepSnapshotSave: {"wait until etcdctl has written and renamed the complete file /var/lib/data/hcpsnap-"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, hs := newWorld(t, tt.pausedUntil)
			o := options()
			if tt.opts != nil {
				tt.opts(&o)
			}
			workflow := steps.Backup()
			names := (&steps.Engine{Steps: workflow}).Names()
			s := &steps.State{
				Opts:    o,
				Clients: steps.Clients{Kube: cs, HyperShift: hs},
				Run:     checkpoint.New("backup", checkpoint.Cluster{Namespace: ns, Name: cluster}, "host", names, now),
				Out:     &steps.Outputs{},
				Now:     func() time.Time { return now },
			}
			ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))

			entries, err := runbook.Build(ctx, workflow, s)
			if err != nil {
				t.Fatal(err)
			}

			// One entry per step, in order, numbered from 1.
			if len(entries) != len(workflow) {
				t.Fatalf("%d entries for %d steps", len(entries), len(workflow))
			}
			for i, e := range entries {
				if e.Number != i+1 || e.Step != workflow[i].Name || e.Summary != workflow[i].Summary || e.Reverts != workflow[i].Reverts {
					t.Errorf("entry %d = %d %s (reverts %q)", i, e.Number, e.Step, e.Reverts)
				}
				skipped := slices.Contains(tt.wantSkipped, e.Step)
				if e.Skipped != skipped {
					t.Errorf("%s skipped = %v, want %v", e.Step, e.Skipped, skipped)
				}
				if skipped && (len(e.Actions) > 0 || len(e.Commands) > 0) {
					t.Errorf("skipped %s has a plan", e.Step)
				}
				if !skipped && len(e.Actions) == 0 {
					t.Errorf("%s has no actions", e.Step)
				}
			}
			for step, wants := range tt.want {
				i := slices.Index(names, step)
				text := strings.Join(append(slices.Clone(entries[i].Actions), entries[i].Commands...), "\n")
				for _, w := range wants {
					if !strings.Contains(text, w) {
						t.Errorf("%s lacks %q in:\n%s", step, w, text)
					}
				}
			}
			// Building the runbook changed nothing.
			for _, a := range cs.Actions() {
				if v := a.GetVerb(); v != "get" && v != "list" {
					t.Errorf("runbook made a %s of %s", v, a.GetResource().Resource)
				}
			}
			if hs.writes != 0 {
				t.Errorf("runbook patched the HostedCluster %d times", hs.writes)
			}

			// Every writer shows the steps with their values, and no secret.
			h := runbook.Header{Title: "hcpsnap backup runbook", Cluster: ns + "/" + cluster, Mode: "offline", RunID: s.Run.RunID}
			outputs := map[string]*bytes.Buffer{"text": {}, "markdown": {}, "json": {}}
			for format, w := range map[string]func(io.Writer, runbook.Header, []runbook.Entry) error{
				"text": runbook.WriteText, "markdown": runbook.WriteMarkdown, "json": runbook.WriteJSON,
			} {
				if err := w(outputs[format], h, entries); err != nil {
					t.Fatalf("%s: %v", format, err)
				}
			}
			for format, buf := range outputs {
				out := buf.String()
				if format == "json" {
					// JSON escapes some characters; compare decoded text.
					out = decodeNDJSON(t, buf.Bytes(), len(entries), tt.wantSkipped)
				}
				for _, e := range entries {
					if !strings.Contains(out, e.Step) {
						t.Errorf("%s output lacks step %s", format, e.Step)
					}
				}
				for step, wants := range tt.want {
					for _, w := range wants {
						if !strings.Contains(out, w) {
							t.Errorf("%s output lacks %q (step %s)", format, w, step)
						}
					}
				}
				if format != "json" {
					for _, name := range tt.wantSkipped {
						if !strings.Contains(out, name+"` (skipped)") && !strings.Contains(out, name+" (skipped)") {
							t.Errorf("%s output does not mark %s skipped", format, name)
						}
					}
				}
				for name, v := range secretData {
					if strings.Contains(out, v) || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(v))) {
						t.Errorf("%s output holds the data of Secret %s", format, name)
					}
				}
				if strings.Contains(out, fakeAWSKeyID) || strings.Contains(out, fakeAWSSecret) {
					t.Errorf("%s output holds the fake AWS credentials", format)
				}
			}
			if !slices.Contains(tt.wantSkipped, steps.StepScaleDown) {
				note := "if anything fails after this step, or on Ctrl-C, scale-up-apiservers (step 5) runs to undo it"
				if !strings.Contains(outputs["text"].String(), note) || !strings.Contains(outputs["markdown"].String(), "**Undo:** "+note) {
					t.Error("the undo note of scale-down-apiservers is missing")
				}
			}
		})
	}
}

// decodeNDJSON checks the JSON runbook's shape and returns its text.
func decodeNDJSON(t *testing.T, data []byte, n int, skipped []string) string {
	t.Helper()
	var text strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		var m struct {
			MessageType string   `json:"message_type"`
			Step        string   `json:"step"`
			Title       string   `json:"title"`
			Skipped     bool     `json:"skipped"`
			Actions     []string `json:"actions"`
			Commands    []string `json:"commands"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		want := "runbook_step"
		if line == 0 {
			want = "runbook"
		}
		if m.MessageType != want {
			t.Errorf("line %d message_type %q, want %q", line, m.MessageType, want)
		}
		if line > 0 && m.Skipped != slices.Contains(skipped, m.Step) {
			t.Errorf("json: %s skipped = %v", m.Step, m.Skipped)
		}
		fmt.Fprintln(&text, m.Step, m.Title)
		for _, s := range append(m.Actions, m.Commands...) {
			fmt.Fprintln(&text, s)
		}
		line++
	}
	if line != n+1 {
		t.Errorf("json: %d lines, want a header and %d steps", line, n)
	}
	return text.String() + string(data)
}

// TestBuildStopsAtPreflight proves a runbook of a cluster that a run would
// refuse is refused the same way.
func TestBuildStopsAtPreflight(t *testing.T) {
	cs, hs := newWorld(t, nil)
	hs.hc = nil
	s := &steps.State{Opts: options(), Clients: steps.Clients{Kube: cs, HyperShift: hs},
		Run: checkpoint.New("backup", checkpoint.Cluster{Namespace: ns, Name: cluster}, "host", nil, now), Out: &steps.Outputs{}}
	_, err := runbook.Build(context.Background(), steps.Backup(), s)
	if err == nil || !strings.HasPrefix(err.Error(), "step preflight: ") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("error %v, want the preflight refusal", err)
	}
}

// TestBuildShards proves the dry run shows a sharded cluster as a run sees
// it: each shard's member checked, its snapshot started, uploaded and
// cleaned up like the default member's; with --without-shards a preflight
// line naming every shard that the backup leaves out; and a missing shard
// member refused as a run refuses it.
func TestBuildShards(t *testing.T) {
	shards := []kube.EtcdShard{{Name: "events", Replicas: 1, Resources: []kube.EtcdShardResource{{Resource: "events"}}}}
	for _, tc := range []struct {
		name           string
		without, noPod bool
	}{{name: "shards"}, {name: "without shards", without: true}, {name: "missing member", noPod: true}} {
		t.Run(tc.name, func(t *testing.T) {
			cs, hs := newWorld(t, nil)
			hs.shards = shards
			if !tc.noPod {
				pod, err := cs.CoreV1().Pods(hcpNS).Get(context.Background(), "etcd-0", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				pod = pod.DeepCopy()
				pod.Name, pod.ResourceVersion = "etcd-events-0", ""
				if _, err := cs.CoreV1().Pods(hcpNS).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			o := options()
			o.WithoutShards = tc.without
			s := &steps.State{Opts: o, Clients: steps.Clients{Kube: cs, HyperShift: hs},
				Run: checkpoint.New("backup", checkpoint.Cluster{Namespace: ns, Name: cluster}, "host", nil, now), Out: &steps.Outputs{}}
			writesBefore := hs.writes
			entries, err := runbook.Build(context.Background(), steps.Backup(), s)
			if tc.noPod {
				if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), "etcd shard events: etcd pod etcd-events-0 not found") {
					t.Fatalf("dry run without the shard's member: %v (exit %d), want the preflight refusal", err, exitcode.Of(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			all := map[string]string{}
			for _, e := range entries {
				all[e.Step] = strings.Join(e.Actions, "\n") + "\n" + strings.Join(e.Commands, "\n")
			}
			checks := map[string]string{
				"preflight":        "etcd shard events (events): member clusters-example/etcd-events-0 is Running and Ready",
				"snapshot-save":    "etcd shard events: start `etcdctl snapshot save",
				"upload-snapshot":  "/snapshot-events.db",
				"cleanup-pod-file": "etcd shard events: stop etcdctl if it still writes",
				"write-manifest":   "etcd shard snapshots (manifest schema version 2",
			}
			if tc.without {
				checks = map[string]string{"preflight": "NOT backed up (--without-shards): etcd shards events (events);"}
			}
			for step, want := range checks {
				if !strings.Contains(all[step], want) {
					t.Errorf("plan of %s lacks %q:\n%s", step, want, all[step])
				}
			}
			if tc.without && strings.Contains(all["snapshot-save"], "etcd-events-0") {
				t.Errorf("--without-shards plan starts a shard snapshot:\n%s", all["snapshot-save"])
			}
			if hs.writes != writesBefore {
				t.Errorf("dry run wrote %d times", hs.writes-writesBefore)
			}
		})
	}
}
