package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	charmlog "github.com/charmbracelet/log"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
	"github.com/hcpsnap/hcpsnap/s3"
	"github.com/hcpsnap/hcpsnap/steps"
)

func refs(names ...string) []kube.HostedClusterRef {
	out := make([]kube.HostedClusterRef, len(names))
	for i, n := range names {
		ns, name, _ := strings.Cut(n, "/")
		out[i] = kube.HostedClusterRef{Namespace: ns, Name: name}
	}
	return out
}

// fakeFleet is a backup function that records how many backups run at once
// and fails the clusters named in fail with the given error.
type fakeFleet struct {
	active, maxActive atomic.Int32
	mu                sync.Mutex
	started           []string
	fail              map[string]error
	hold              time.Duration
}

func (f *fakeFleet) backup(ctx context.Context, c kube.HostedClusterRef) (*Summary, error) {
	n := f.active.Add(1)
	defer f.active.Add(-1)
	for {
		m := f.maxActive.Load()
		if n <= m || f.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	name := c.Namespace + "/" + c.Name
	f.mu.Lock()
	f.started = append(f.started, name)
	f.mu.Unlock()
	select {
	case <-time.After(f.hold):
	case <-ctx.Done():
		return nil, fmt.Errorf("step snapshot-save: %w", ctx.Err())
	}
	if err := f.fail[name]; err != nil {
		return nil, err
	}
	return &Summary{Cluster: name, RunID: "run-" + c.Name, DowntimeSeconds: 1.5, Bytes: 3 << 20, Manifest: "s3://b/backups/" + c.Name + "/t/manifest.json"}, nil
}

// TestBackupFleetNeverExceedsParallel: however many clusters, no more than
// --parallel backups (control planes down) at once, and all of them run.
func TestBackupFleetNeverExceedsParallel(t *testing.T) {
	for _, parallel := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(parallel), func(t *testing.T) {
			f := &fakeFleet{hold: 20 * time.Millisecond}
			clusters := refs("c/a", "c/b", "c/c", "c/d", "c/e", "c/f", "c/g")
			results := backupFleet(context.Background(), clusters, parallel, nil, f.backup)
			if got := int(f.maxActive.Load()); got != parallel {
				t.Fatalf("at most %d backups ran at once, want exactly %d (the bound, reached)", got, parallel)
			}
			if len(f.started) != len(clusters) {
				t.Fatalf("started %v, want all %d", f.started, len(clusters))
			}
			for i, r := range results {
				if r.Cluster != clusters[i] || r.Err != nil || r.Summary == nil || r.result() != "succeeded" {
					t.Fatalf("result %d = %+v, want %v succeeded in order", i, r, clusters[i])
				}
			}
			if err := fleetError(context.Background(), results); err != nil {
				t.Fatalf("fleetError = %v, want nil", err)
			}
		})
	}
}

// TestBackupFleetOutcomes: one failure does not stop the others, and the
// exit code follows the documented order (5 wins, then 130, then 6).
func TestBackupFleetOutcomes(t *testing.T) {
	restored := exitcode.New(exitcode.Restored, errors.New("step snapshot-save: etcdctl: exit 1"))
	manual := exitcode.New(exitcode.ManualAction, errors.New("step scale-up-apiservers: conflict\nsecond line"))
	tests := []struct {
		name       string
		fail       map[string]error
		wantCode   exitcode.Code
		wantResult map[string]string
	}{
		{"all succeed", nil, exitcode.OK, map[string]string{"c/a": "succeeded", "c/b": "succeeded", "c/c": "succeeded"}},
		{"one fails", map[string]error{"c/a": restored}, exitcode.Partial,
			map[string]string{"c/a": "failed", "c/b": "succeeded", "c/c": "succeeded"}},
		{"all fail", map[string]error{"c/a": restored, "c/b": restored, "c/c": exitcode.Preconditionf("held")}, exitcode.Partial,
			map[string]string{"c/a": "failed", "c/b": "failed", "c/c": "failed"}},
		{"manual action wins", map[string]error{"c/a": restored, "c/b": manual}, exitcode.ManualAction,
			map[string]string{"c/a": "failed", "c/b": "manual-action", "c/c": "succeeded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeFleet{fail: tt.fail}
			results := backupFleet(context.Background(), refs("c/a", "c/b", "c/c"), 1, nil, f.backup)
			if len(f.started) != 3 {
				t.Fatalf("started %v, want all three despite failures", f.started)
			}
			for _, r := range results {
				name := r.Cluster.Namespace + "/" + r.Cluster.Name
				if r.result() != tt.wantResult[name] {
					t.Errorf("%s: result %q, want %q", name, r.result(), tt.wantResult[name])
				}
			}
			err := fleetError(context.Background(), results)
			if got := exitcode.Of(err); got != tt.wantCode {
				t.Fatalf("exit %d (%v), want %d", got, err, tt.wantCode)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Fatalf("fleet error is not one line: %q", err)
			}
		})
	}
}

// TestBackupFleetInterrupted: Ctrl-C stops starting new backups, the running
// one sees the cancellation (its engine undoes), the exit code is 130.
func TestBackupFleetInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeFleet{hold: time.Hour}
	go func() {
		for f.active.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	results := backupFleet(ctx, refs("c/a", "c/b", "c/c"), 1, nil, f.backup)
	if len(f.started) != 1 {
		t.Fatalf("started %v, want only the first", f.started)
	}
	want := []string{"interrupted", "not-started", "not-started"}
	for i, r := range results {
		if r.result() != want[i] {
			t.Errorf("%s: %q, want %q", r.Cluster.Name, r.result(), want[i])
		}
	}
	if got := exitcode.Of(fleetError(ctx, results)); got != exitcode.Interrupted {
		t.Fatalf("exit %d, want 130", got)
	}
}

// TestSameNamesAreRefused: two HostedClusters of one name in two namespaces
// would share <prefix>/<name>/; neither is started, the others are.
func TestSameNamesAreRefused(t *testing.T) {
	clusters := refs("a/x", "b/x", "a/y")
	refused := sameNames(clusters, "backups")
	if len(refused) != 2 || refused[clusters[0]] == nil || refused[clusters[1]] == nil {
		t.Fatalf("refused %v, want a/x and b/x", refused)
	}
	if msg := refused[clusters[0]].Error(); !strings.Contains(msg, "backups/x/") || !strings.Contains(msg, "a, b") {
		t.Fatalf("message %q should name the shared folder and both namespaces", msg)
	}
	f := &fakeFleet{}
	results := backupFleet(context.Background(), clusters, 2, refused, f.backup)
	if len(f.started) != 1 || f.started[0] != "a/y" {
		t.Fatalf("started %v, want only a/y", f.started)
	}
	if results[0].result() != "refused" || results[1].result() != "refused" || results[2].result() != "succeeded" {
		t.Fatalf("results %+v", results)
	}
	if got := exitcode.Of(fleetError(context.Background(), results)); got != exitcode.Partial {
		t.Fatalf("exit %d, want %d", got, exitcode.Partial)
	}
}

func TestFleetSummary(t *testing.T) {
	results := []fleetResult{
		{Cluster: refs("c/a")[0], Started: true, Summary: &Summary{RunID: "r1", DowntimeSeconds: 2.25, Bytes: 2 << 20, Manifest: "s3://b/backups/a/t/manifest.json"}},
		{Cluster: refs("c/b")[0], Started: true, Err: exitcode.New(exitcode.Restored, errors.New("step snapshot-save: boom\nmore"))},
		{Cluster: refs("c/p")[0], Started: true, Summary: &Summary{RunID: "r3", Bytes: 1 << 20, Manifest: "s3://b/backups/p/t/manifest.json"},
			Err: exitcode.New(exitcode.Partial, errors.New("backup complete, but --prune failed"))},
	}
	var text bytes.Buffer
	if err := writeFleetSummary(&text, OutputText, results); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2 of 3 clusters backed up", "succeeded, prune failed", "CLUSTER", "c/a", "succeeded", "2.2s", "2.0 MiB", "s3://b/backups/a/t/manifest.json",
		"c/b", "failed", "step snapshot-save: boom more"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text summary lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := writeFleetSummary(&js, OutputJSON, results); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want one JSON line per cluster, got %q", js.String())
	}
	var got []fleetLine
	for _, l := range lines {
		var fl fleetLine
		if err := json.Unmarshal([]byte(l), &fl); err != nil {
			t.Fatal(err)
		}
		got = append(got, fl)
	}
	if got[0].Cluster != "c/a" || got[0].Result != "succeeded" || got[0].RunID != "r1" || got[0].ExitCode != 0 || got[0].MessageType != "cluster_result" {
		t.Errorf("line 1 = %+v", got[0])
	}
	if got[2].Cluster != "c/p" || got[2].Result != "succeeded, prune failed" || got[2].ExitCode != int(exitcode.Partial) || got[2].Manifest == "" {
		t.Errorf("line 3 = %+v", got[2])
	}
	if got[1].Cluster != "c/b" || got[1].Result != "failed" || got[1].ExitCode != int(exitcode.Restored) || got[1].Error != "step snapshot-save: boom more" {
		t.Errorf("line 2 = %+v", got[1])
	}
}

// TestReporterNamesTheCluster: in a fleet each event line says its cluster.
func TestReporterNamesTheCluster(t *testing.T) {
	var out bytes.Buffer
	r := newReporter(OutputJSON, &out, io.Discard)
	r.cluster = "clusters/example-2"
	r.event(fakeEvent("run_started"))
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["cluster"] != "clusters/example-2" || m["message_type"] != "run_started" {
		t.Fatalf("event %v, want its cluster and type", m)
	}
}

func TestFleetUsageErrors(t *testing.T) {
	base := []string{"backup", "--bucket", "backups-bucket"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"selector and cluster", append(base, "--selector", "a=b", "--cluster", "x"), nil, "--cluster and --selector exclude each other"},
		{"all namespaces and cluster from env", append(base, "-A"), map[string]string{"HCPSNAP_CLUSTER": "x"}, "--cluster and --all-namespaces exclude each other"},
		{"selector and resume", append(base, "-l", "a=b", "--resume"), nil, "--resume and --selector exclude each other"},
		{"selector and abandon", append(base, "-l", "a=b", "--abandon", "--yes"), nil, "--abandon and --selector exclude each other"},
		{"bad selector", append(base, "--selector", "a==b=c"), nil, `--selector "a==b=c" is not a label selector`},
		{"parallel zero", append(base, "-A", "--parallel", "0"), nil, "--parallel 0 is out of range"},
		{"parallel too high", append(base, "-A", "--parallel", "65"), nil, "--parallel 65 is out of range"},
		{"key-out in a fleet", append(base, "-A", "--key-out", "/tmp/k"), nil, "--key-out and --all-namespaces exclude each other"},
		{"bucket still required", []string{"backup", "-A"}, nil, "--bucket is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			err := New(strings.NewReader(""), &out, &errOut).Run(context.Background(), append([]string{"hcpsnap"}, tt.args...))
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v (exit %d), want one usage line containing %q", err, exitcode.Of(err), tt.want)
			}
			if out.Len() != 0 {
				t.Fatalf("stdout %q, want nothing", out.String())
			}
		})
	}
}

// fleetWorld is a management cluster with HostedClusters for runFleet.
func fleetWorld(objs ...*unstructured.Unstructured) *dynamicfake.FakeDynamicClient {
	rs := make([]runtime.Object, len(objs))
	for i, o := range objs {
		rs[i] = o
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{kube.HostedClusterGVR: "HostedClusterList"}, rs...)
}

func hostedCluster(ns, name string, labels map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "hypershift.openshift.io/v1beta1", "kind": "HostedCluster",
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels},
	}}
}

// TestRunFleetSelectsAndRefuses: a selector matching nothing is exit 3 with
// nothing changed; same-named clusters across namespaces are refused
// without a single write.
func TestRunFleetSelectsAndRefuses(t *testing.T) {
	dyn := fleetWorld(
		hostedCluster("clusters", "example", map[string]any{"env": "prod"}),
		hostedCluster("other", "example", map[string]any{"env": "prod"}),
		hostedCluster("clusters", "dev", map[string]any{"env": "dev"}),
	)
	newOpts := func(f FleetOptions) (*BackupOptions, *bytes.Buffer) {
		var out bytes.Buffer
		o := &BackupOptions{Fleet: f, Out: &out, ErrOut: io.Discard, Global: &GlobalOptions{Output: OutputText},
			hyper: &kube.HyperShift{Dynamic: dyn}}
		o.Namespace, o.Prefix = "clusters", "backups"
		o.S3.PartSizeMiB, o.S3.Concurrency = 5, 1
		return o, &out
	}
	ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))

	o, out := newOpts(FleetOptions{Selector: "env=staging", Parallel: 1})
	err := o.Run(ctx)
	if exitcode.Of(err) != exitcode.Precondition || !strings.Contains(err.Error(), `no HostedCluster matches selector "env=staging" in namespace clusters`) || out.Len() != 0 {
		t.Fatalf("selector matching nothing: %v (exit %d), stdout %q", err, exitcode.Of(err), out.String())
	}

	o, out = newOpts(FleetOptions{Selector: "env=prod", AllNamespaces: true, Parallel: 2})
	err = o.Run(ctx)
	if exitcode.Of(err) != exitcode.Partial {
		t.Fatalf("same names: %v (exit %d), want %d", err, exitcode.Of(err), exitcode.Partial)
	}
	for _, want := range []string{"0 of 2 clusters backed up", "clusters/example  refused", "other/example     refused"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	for _, a := range dyn.Actions() {
		if a.GetVerb() != "list" {
			t.Errorf("unexpected %s %s: a refused fleet changes nothing", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

// backupsStore is a bucket of manifests for `hcpsnap backups`.
type backupsStore struct{ objects map[string]string }

func (s *backupsStore) Head(context.Context, string) (s3.ObjectInfo, bool, error) {
	return s3.ObjectInfo{}, false, nil
}

func (s *backupsStore) Get(_ context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error) {
	return io.NopCloser(strings.NewReader(s.objects[key])), s3.ObjectInfo{Key: key}, nil
}

func (s *backupsStore) List(_ context.Context, prefix string) ([]s3.ObjectInfo, error) {
	var out []s3.ObjectInfo
	for k := range s.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s3.ObjectInfo{Key: k})
		}
	}
	return out, nil
}

func (s *backupsStore) Presign(context.Context, string, time.Duration) (string, time.Time, error) {
	return "", time.Time{}, nil
}

var _ restore.Store = (*backupsStore)(nil)

func manifestOf(t *testing.T, ns, name, finished string) string {
	t.Helper()
	at, err := time.Parse(time.RFC3339, finished)
	if err != nil {
		t.Fatal(err)
	}
	m := manifest.Manifest{SchemaVersion: manifest.SchemaVersion, RunID: "r-" + name + finished, Cluster: name, Namespace: ns}
	m.Snapshot.Key = "backups/" + name + "/t/snapshot.db"
	m.Times.Finished = at
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBackupsListsEveryCluster: without --cluster every cluster's backups
// are listed, grouped by namespace/name and newest first within each; with
// --cluster, only that folder.
func TestBackupsListsEveryCluster(t *testing.T) {
	store := &backupsStore{objects: map[string]string{
		"backups/example/20260101T000000Z/manifest.json":   manifestOf(t, "clusters", "example", "2026-01-01T00:00:00Z"),
		"backups/example/20260103T000000Z/manifest.json":   manifestOf(t, "clusters", "example", "2026-01-03T00:00:00Z"),
		"backups/example-2/20260102T000000Z/manifest.json": manifestOf(t, "clusters", "example-2", "2026-01-02T00:00:00Z"),
		"other/example/20260104T000000Z/manifest.json":     manifestOf(t, "clusters", "example", "2026-01-04T00:00:00Z"),
	}}
	ctx := charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
	list := func(cluster, format string) string {
		var out bytes.Buffer
		o := &BackupsOptions{Cluster: cluster, Prefix: "backups", Out: &out, Global: &GlobalOptions{Output: format}, store: store}
		o.S3.Bucket = "b"
		if err := o.Run(ctx); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	text := list("", OutputText)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "CLUSTER") {
		t.Fatalf("want a CLUSTER header and three backups:\n%s", text)
	}
	for i, want := range []string{"clusters/example    2026-01-03", "clusters/example    2026-01-01", "clusters/example-2  2026-01-02"} {
		if !strings.HasPrefix(lines[i+1], want) {
			t.Errorf("line %d = %q, want it to start with %q", i+1, lines[i+1], want)
		}
	}
	if one := list("example-2", OutputText); strings.Contains(one, "CLUSTER") || strings.Count(strings.TrimSpace(one), "\n") != 1 {
		t.Errorf("--cluster example-2 lists:\n%s", one)
	}
	js := strings.Split(strings.TrimSpace(list("", OutputJSON)), "\n")
	if len(js) != 3 {
		t.Fatalf("json lines %q", js)
	}
	var last map[string]any
	if err := json.Unmarshal([]byte(js[2]), &last); err != nil {
		t.Fatal(err)
	}
	if last["cluster"] != "clusters/example-2" {
		t.Errorf("last json line %v, want cluster clusters/example-2", last)
	}
}

func fakeEvent(kind string) steps.Event { return steps.Event{MessageType: kind, Message: "m"} }
