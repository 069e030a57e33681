package command

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	charmlog "github.com/charmbracelet/log"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/steps"
)

// abandonWorld is a management cluster holding one HostedCluster, whose
// spec has a field the vendored API does not know. Patches are recorded,
// and one whose metadata.resourceVersion is not the stored one is refused
// with a Conflict, as the API server does.
type abandonWorld struct {
	dyn     *dynamicfake.FakeDynamicClient
	patches []string
	rv      string
}

func newAbandonWorld(t *testing.T, annotation *string) *abandonWorld {
	t.Helper()
	meta := map[string]any{"name": "example", "namespace": "clusters", "uid": "uid-1", "resourceVersion": "7"}
	if annotation != nil {
		meta["annotations"] = map[string]any{steps.RunAnnotation: *annotation, "other.io/keep": "yes"}
	}
	hc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster", "metadata": meta,
		"spec": map[string]any{"etcd": map[string]any{"managementType": "Managed"}, "futureField": map[string]any{"a": "b"}},
	}}
	w := &abandonWorld{rv: "7"}
	w.dyn = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{kube.HostedClusterGVR: "HostedClusterList"}, hc)
	w.dyn.PrependReactor("patch", "hostedclusters", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		w.patches = append(w.patches, string(p.GetPatch()))
		var m struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		_ = json.Unmarshal(p.GetPatch(), &m)
		if m.Metadata.ResourceVersion != w.rv {
			return true, nil, apierrors.NewConflict(kube.HostedClusterGVR.GroupResource(), "example", nil)
		}
		return false, nil, nil
	})
	return w
}

func (w *abandonWorld) hostedCluster(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	u, err := w.dyn.Resource(kube.HostedClusterGVR).Namespace("clusters").Get(context.Background(), "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func abandonOptions(w *abandonWorld, stateDir, stdin string, terminal bool, extra func(*BackupOptions)) (*BackupOptions, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	o := &BackupOptions{Abandon: true, StateDir: stateDir, In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut,
		Global: &GlobalOptions{Output: OutputText}, hyper: &kube.HyperShift{Dynamic: w.dyn},
		terminal: func(io.Reader) bool { return terminal }}
	o.Cluster, o.Namespace = "example", "clusters"
	if extra != nil {
		extra(o)
	}
	return o, &out, &errOut
}

func runAbandon(t *testing.T, o *BackupOptions) error {
	t.Helper()
	ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
	if err := o.checkConfirmable(); err != nil {
		return err
	}
	return o.Run(ctx)
}

func TestAbandon(t *testing.T) {
	run := midRun(t, nil, nil)
	run.Step(steps.StepScaleUp).Status = checkpoint.Failed
	run.Step(steps.StepScaleUp).Error = "timed out\nwaiting"
	data, _ := json.Marshal(run)
	held := string(data)
	garbage := "{not a run"

	tests := []struct {
		name        string
		annotation  *string
		localRun    bool
		stdin       string
		terminal    bool
		opts        func(*BackupOptions)
		wantCode    exitcode.Code
		wantOut     []string
		wantRelease bool
	}{
		{name: "confirmed on a terminal", annotation: &held, localRun: true, stdin: "y\n", terminal: true, wantRelease: true,
			wantOut: []string{
				"Run " + run.RunID + " of clusters/example: host ci-runner-7",
				"scale-down-apiservers  done: kube-apiserver was 3, openshift-apiserver was 2, openshift-oauth-apiserver was 1, now scaled to 0 - not restored",
				`pause-reconciliation   done: spec.pausedUntil was absent, now "2026-06-03T14:35:09Z"`,
				`scale-up-apiservers    failed: "timed out\nwaiting"`,
				"Left undone: scale-up-apiservers, resume-reconciliation, upload-snapshot, save-encryption-key, cleanup-pod-file, write-manifest.",
				"  oc scale deployment -n clusters-example kube-apiserver --replicas=3",
				`  oc patch hostedcluster -n clusters example --type=merge -p '{"spec":{"pausedUntil":null}}'`,
				"  oc exec -n clusters-example etcd-0 -c etcd -- sh -c 'rm -f /var/lib/data/hcpsnap-" + run.RunID + ".db /var/lib/data/hcpsnap-" + run.RunID + ".db.*'",
				"is released from run " + run.RunID,
			}},
		{name: "declined", annotation: &held, stdin: "n\n", terminal: true, wantCode: exitcode.Usage, wantOut: []string{"now scaled to 0 - not restored"}},
		{name: "no answer", annotation: &held, stdin: "", terminal: true, wantCode: exitcode.Usage},
		{name: "--yes", annotation: &held, opts: func(o *BackupOptions) { o.Yes = true }, wantRelease: true},
		{name: "--dry-run prints only", annotation: &held, opts: func(o *BackupOptions) { o.DryRun = true }, wantOut: []string{"Left undone:"}},
		{name: "unreadable annotation", annotation: &garbage, opts: func(o *BackupOptions) { o.Yes = true }, wantRelease: true,
			wantOut: []string{"holds no readable run of this cluster"}},
		{name: "nothing to release", wantCode: exitcode.Precondition, opts: func(o *BackupOptions) { o.Yes = true }},
		{name: "stale read", annotation: &held, opts: func(o *BackupOptions) { o.Yes = true }, wantCode: exitcode.Precondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newAbandonWorld(t, tt.annotation)
			if tt.name == "stale read" {
				w.rv = "8" // someone wrote the HostedCluster after hcpsnap read it
			}
			dir := t.TempDir()
			if tt.localRun {
				if err := checkpoint.WriteFile(dir, run); err != nil {
					t.Fatal(err)
				}
			}
			o, out, _ := abandonOptions(w, dir, tt.stdin, tt.terminal, tt.opts)
			err := runAbandon(t, o)
			if exitcode.Of(err) != tt.wantCode {
				t.Fatalf("exit %d (%v), want %d", exitcode.Of(err), err, tt.wantCode)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			hc := w.hostedCluster(t)
			_, stillHeld := hc.GetAnnotations()[steps.RunAnnotation]
			if tt.annotation != nil && stillHeld == tt.wantRelease {
				t.Errorf("annotation still there = %v, want released = %v (patches %q)", stillHeld, tt.wantRelease, w.patches)
			}
			if hc.GetAnnotations()["other.io/keep"] != "yes" && tt.annotation != nil {
				t.Error("another annotation was removed")
			}
			if v, _, _ := unstructured.NestedString(hc.Object, "spec", "futureField", "a"); v != "b" {
				t.Error("a spec field the vendored API lacks was lost")
			}
			for _, p := range w.patches {
				if p != `{"metadata":{"annotations":{"`+steps.RunAnnotation+`":null},"resourceVersion":"7"}}` {
					t.Errorf("patch %s is not a removal of the annotation alone, preconditioned on the resourceVersion read", p)
				}
			}
			if !tt.wantRelease && tt.wantCode != exitcode.Precondition && len(w.patches) > 0 {
				t.Errorf("patched without a release: %q", w.patches)
			}
			if tt.localRun && tt.wantRelease {
				got, err := checkpoint.Latest(dir, testCluster)
				if err != nil || got != nil {
					t.Errorf("this machine's run file is still offered for --resume: %v, %v", got, err)
				}
			}
			if strings.Count(out.String(), "waiting") > 0 && !strings.Contains(out.String(), `\nwaiting`) {
				t.Error("a line break from the run annotation reached the output")
			}
		})
	}
}

// TestDescribeRun covers what --abandon says of each kind of leftover.
func TestDescribeRun(t *testing.T) {
	tests := []struct {
		name    string
		run     func(t *testing.T) *checkpoint.Run
		want    []string // in notes, NotRestored or Commands
		notWant []string
	}{
		{name: "undone after a failure: nothing left",
			run: func(t *testing.T) *checkpoint.Run {
				r := midRun(t, nil, nil)
				for _, n := range []string{steps.StepPause, steps.StepScaleDown, steps.StepSnapshotSave, steps.StepScaleUp, steps.StepResume, steps.StepCleanupPodFile} {
					r.Step(n).Status = checkpoint.Undone
				}
				return r
			},
			want: []string{"reverted after a failure"}, notWant: []string{"oc ", "not restored", "not removed"}},
		{name: "an upload cut off",
			run: func(t *testing.T) *checkpoint.Run {
				r := midRun(t, nil, func(o *steps.Outputs, _ string) {
					o.Attempt.ObjectKey, o.Attempt.UploadID = "backups/example/20260603T140509Z/snapshot.db", "upload-1"
				})
				for _, n := range []string{steps.StepScaleUp, steps.StepResume} {
					r.Step(n).Status = checkpoint.Done
				}
				r.Step(steps.StepUpload).Status = checkpoint.Running
				return r
			},
			want: []string{"an unfinished multipart upload of s3://hcpsnap-backups/backups/example/20260603T140509Z/snapshot.db may remain - not removed",
				"aws s3api abort-multipart-upload --bucket hcpsnap-backups --key backups/example/20260603T140509Z/snapshot.db --upload-id upload-1",
				"restored by scale-up-apiservers"}},
		{name: "etcd shards: their files and uploads too",
			run: func(t *testing.T) *checkpoint.Run {
				r := midRun(t, nil, func(o *steps.Outputs, _ string) {
					o.Attempt.ObjectKey = "backups/example/20260603T140509Z/snapshot.db"
					sh := shardRun(o, "events")
					sh.Attempt.ObjectKey, sh.Attempt.UploadID = "backups/example/20260603T140509Z/snapshot-events.db", "upload-2"
					o.Shards = []steps.ShardRun{sh}
				})
				r.Step(steps.StepUpload).Status = checkpoint.Running
				return r
			},
			want: []string{"may remain in pod clusters-example/etcd-0, etcd-events-0", "oc exec -n clusters-example etcd-events-0 -c etcd -- sh -c 'rm -f",
				"an unfinished multipart upload of s3://hcpsnap-backups/backups/example/20260603T140509Z/snapshot.db, s3://hcpsnap-backups/backups/example/20260603T140509Z/snapshot-events.db may remain",
				"--key backups/example/20260603T140509Z/snapshot-events.db --upload-id upload-2"}},
		{name: "a key bundle without a manifest",
			run: func(t *testing.T) *checkpoint.Run {
				r := midRun(t, nil, func(o *steps.Outputs, _ string) {
					o.Attempt.ObjectKey, o.KeyBundleKey = "backups/example/20260603T140509Z/snapshot.db", "hcpsnap-keys/example/20260603T140509Z/key-bundle.json"
				})
				for _, n := range []string{steps.StepScaleUp, steps.StepResume, steps.StepUpload, steps.StepSaveKeys, steps.StepCleanupPodFile} {
					r.Step(n).Status = checkpoint.Done
				}
				return r
			},
			want: []string{"the key bundle (AES keys) is at s3://hcpsnap-backups/hcpsnap-keys/example/20260603T140509Z/key-bundle.json, but no backup uses it",
				"aws s3 rm s3://hcpsnap-backups/hcpsnap-keys/example/20260603T140509Z/key-bundle.json", "no manifest describes it"}},
		{name: "a forged Deployment name is quoted, not run",
			run: func(t *testing.T) *checkpoint.Run {
				return midRun(t, nil, func(o *steps.Outputs, _ string) { o.Replicas = map[string]int32{"x; rm -rf /": 3} })
			},
			want: []string{`oc scale deployment -n clusters-example 'x; rm -rf /' --replicas=3`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := describeRun(annotated(t, tt.run(t)), testCluster, time.Now())
			var all []string
			for _, s := range rep.Steps {
				all = append(all, s.Note)
			}
			all = append(append(all, rep.NotRestored...), rep.Commands...)
			text := strings.Join(all, "\n")
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("report lacks %q:\n%s", w, text)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(text, w) {
					t.Errorf("report holds %q:\n%s", w, text)
				}
			}
		})
	}
}
