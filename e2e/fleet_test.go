//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/hcpsnap/hcpsnap/e2e/nodeagent"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// The fleet tests need the environment's second HostedCluster
// (HOSTED_CLUSTERS=2, as `make e2e-fleet` starts it). They select the two
// clusters by a label they set, so that HostedClusters other tests create
// are never part of a fleet.
const (
	fleetLabel    = "e2e.hcpsnap.io/fleet"
	fleetSelector = fleetLabel + "=yes"
)

// noClusterEnv unsets the environment's HCPSNAP_CLUSTER for a fleet run:
// --cluster and --selector exclude each other.
var noClusterEnv = []string{"HCPSNAP_CLUSTER="}

// fleetEnvs returns the environment as seen from each of its first two
// HostedClusters, both labelled for the fleet until the test ends.
func fleetEnvs(t *testing.T) (*testEnv, *testEnv) {
	t.Helper()
	env := loadEnv(t)
	list := strings.Fields(env.vars["LOCALENV_HOSTED_CLUSTERS"])
	if len(list) < 2 {
		t.Fatalf("the fleet tests need two HostedClusters, the environment has %v: start it with HOSTED_CLUSTERS=2 (make e2e-fleet)", list)
	}
	ns, name, _ := strings.Cut(list[1], "/")
	other := *env
	other.namespace, other.cluster, other.hcpNamespace = ns, name, ns+"-"+name
	for _, e := range []*testEnv{env, &other} {
		e.label(t, "yes")
		t.Cleanup(func() { e.label(t, "") })
	}
	return env, &other
}

// label sets (or with "" removes) the fleet label of e's HostedCluster.
func (e *testEnv) label(t *testing.T, value string) {
	t.Helper()
	v := any(value)
	if value == "" {
		v = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{fleetLabel: v}}})
	if _, err := e.hyper.Dynamic.Resource(kube.HostedClusterGVR).Namespace(e.namespace).
		Patch(context.Background(), e.cluster, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("label HostedCluster %s/%s: %v", e.namespace, e.cluster, err)
	}
}

// apiWatch records, in etcd's order (resourceVersion), every change of the
// kube-apiserver Deployments of the given control plane namespaces, and
// whether at any point all of them were down at once: scaled to 0 or with no
// available replica.
type apiWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	down      map[string]bool
	everDown  map[string]bool
	allDownAt []string
	events    int
	err       error
}

func (e *testEnv) watchAPIServers(t *testing.T, hcpNamespaces ...string) *apiWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &apiWatch{cancel: cancel, done: make(chan struct{}), down: map[string]bool{}, everDown: map[string]bool{}}
	opts := metav1.ListOptions{FieldSelector: "metadata.name=" + "kube-apiserver"}
	list, err := e.kube.AppsV1().Deployments("").List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	wanted := map[string]bool{}
	for _, ns := range hcpNamespaces {
		wanted[ns] = true
	}
	for i := range list.Items {
		if wanted[list.Items[i].Namespace] {
			w.see(&list.Items[i])
		}
	}
	if len(w.down) != len(hcpNamespaces) {
		t.Fatalf("kube-apiserver Deployments found in %v, want %v", w.down, hcpNamespaces)
	}
	opts.ResourceVersion = list.ResourceVersion
	wi, err := e.kube.AppsV1().Deployments("").Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		defer wi.Stop()
		for ev := range wi.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if ctx.Err() != nil {
				return
			}
			if ev.Type == watch.Error || !ok {
				w.mu.Lock()
				w.err = fmt.Errorf("watch of the kube-apiserver Deployments ended early: %v", ev.Object)
				w.mu.Unlock()
				return
			}
			if wanted[d.Namespace] {
				w.see(d)
			}
		}
	}()
	return w
}

func (w *apiWatch) see(d *appsv1.Deployment) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events++
	var replicas int32
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	down := replicas == 0 || d.Status.AvailableReplicas == 0
	w.down[d.Namespace] = down
	if down {
		w.everDown[d.Namespace] = true
	}
	all := true
	for _, dn := range w.down {
		all = all && dn
	}
	if all {
		w.allDownAt = append(w.allDownAt, fmt.Sprintf("resourceVersion %s (%s: replicas %d, available %d)",
			d.ResourceVersion, d.Namespace, replicas, d.Status.AvailableReplicas))
	}
}

// stop ends the watch and returns what it saw; a watch that ended before
// (an error) fails the test, since it may have missed a change.
func (w *apiWatch) stop(t *testing.T) (everDown map[string]bool, allDownAt []string, events int) {
	t.Helper()
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatal(w.err)
	}
	return w.everDown, w.allDownAt, w.events
}

// clusterResults parses the cluster_result lines of a fleet's NDJSON output.
func clusterResults(t *testing.T, stdout string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", line, err)
		}
		c, _ := m["cluster"].(string)
		if c == "" {
			t.Errorf("stdout line %q does not say its cluster", line)
		}
		if m["message_type"] == "cluster_result" {
			out[c] = m
		}
	}
	return out
}

// checkFleetBackup checks, for the cluster of e, that one whole backup
// landed under prefix: listed by the aws CLI, its manifest names the
// cluster, etcdutl reads the snapshot, the key bundle is the cluster's.
func (e *testEnv) checkFleetBackup(t *testing.T, prefix string, result map[string]any) {
	t.Helper()
	name := e.namespace + "/" + e.cluster
	if result == nil || result["result"] != "succeeded" {
		t.Fatalf("%s: result %v, want succeeded", name, result)
	}
	var snapshots, manifests []string
	for _, k := range e.awsList(t, e.bucket, prefix+"/"+e.cluster) {
		switch {
		case strings.HasSuffix(k, "/snapshot.db"):
			snapshots = append(snapshots, k)
		case strings.HasSuffix(k, "/manifest.json"):
			manifests = append(manifests, k)
		}
	}
	if len(snapshots) != 1 || len(manifests) != 1 {
		t.Fatalf("%s: aws s3 ls finds snapshots %v and manifests %v, want one each", name, snapshots, manifests)
	}
	url := "s3://" + e.bucket + "/" + manifests[0]
	if result["manifest"] != url {
		t.Errorf("%s: summary names manifest %v, the bucket holds %s", name, result["manifest"], url)
	}
	m := e.readManifest(t, url)
	if m.Cluster != e.cluster || m.Namespace != e.namespace || m.HCPNamespace != e.hcpNamespace {
		t.Fatalf("%s: manifest names %s/%s (%s)", name, m.Namespace, m.Cluster, m.HCPNamespace)
	}
	e.checkSnapshot(t, m)
	e.checkKeyBundle(t, m)
}

// checkReleased checks that no run holds e's cluster.
func (e *testEnv) checkReleased(t *testing.T) {
	t.Helper()
	hc, err := e.hyper.GetHostedCluster(context.Background(), e.namespace, e.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if v, held := hc.Annotations["hcpsnap.io/backup-run"]; held {
		t.Errorf("%s/%s: a run still holds the cluster: %.120s", e.namespace, e.cluster, v)
	}
}

// TestFleetParallelOne: a fleet of two with --parallel 1 backs both up and
// never has both control planes down; `backups` without --cluster lists
// both.
func TestFleetParallelOne(t *testing.T) {
	one, two := fleetEnvs(t)
	before1, before2 := one.state(t), two.state(t)
	w := one.watchAPIServers(t, one.hcpNamespace, two.hcpNamespace)
	const prefix = "fleet-p1"
	r := one.startHcpsnap(t, t.TempDir(), noClusterEnv, "-o", "json", "backup", "--selector", fleetSelector, "--parallel", "1", "--prefix", prefix)
	code := r.wait(t)
	everDown, allDown, events := w.stop(t)
	if code != 0 {
		t.Fatalf("fleet exit %d\nstdout:\n%s\nstderr:\n%s", code, r.stdout.String(), r.stderr.String())
	}
	if len(allDown) > 0 {
		t.Errorf("both control planes were down at once with --parallel 1: %v", allDown)
	}
	for _, e := range []*testEnv{one, two} {
		if !everDown[e.hcpNamespace] {
			t.Errorf("the watch (%d events) never saw %s's kube-apiserver down: it cannot tell overlap", events, e.hcpNamespace)
		}
	}
	results := clusterResults(t, r.stdout.String())
	if len(results) != 2 {
		t.Fatalf("cluster results %v, want two", results)
	}
	one.checkFleetBackup(t, prefix, results[one.namespace+"/"+one.cluster])
	two.checkFleetBackup(t, prefix, results[two.namespace+"/"+two.cluster])
	one.checkClusterAsBefore(t, before1)
	two.checkClusterAsBefore(t, before2)
	one.checkReleased(t)
	two.checkReleased(t)

	// Every cluster's backups, with the namespace in the CLUSTER column.
	res := one.hcpsnap(t, t.TempDir(), "backups", "--cluster", "", "--prefix", prefix)
	if res.code != 0 {
		t.Fatalf("backups exit %d: %s", res.code, res.stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "CLUSTER") ||
		!strings.HasPrefix(lines[1], one.namespace+"/"+one.cluster+" ") || !strings.HasPrefix(lines[2], two.namespace+"/"+two.cluster+" ") {
		t.Fatalf("backups without --cluster:\n%s", res.stdout)
	}
}

// TestFleetParallelTwo: every namespace, two at once; both land.
func TestFleetParallelTwo(t *testing.T) {
	one, two := fleetEnvs(t)
	before1, before2 := one.state(t), two.state(t)
	const prefix = "fleet-p2"
	r := one.startHcpsnap(t, t.TempDir(), noClusterEnv, "-o", "json", "backup", "--all-namespaces", "--selector", fleetSelector, "--parallel", "2", "--prefix", prefix)
	if code := r.wait(t); code != 0 {
		t.Fatalf("fleet exit %d\nstdout:\n%s\nstderr:\n%s", code, r.stdout.String(), r.stderr.String())
	}
	results := clusterResults(t, r.stdout.String())
	one.checkFleetBackup(t, prefix, results[one.namespace+"/"+one.cluster])
	two.checkFleetBackup(t, prefix, results[two.namespace+"/"+two.cluster])
	one.checkClusterAsBefore(t, before1)
	two.checkClusterAsBefore(t, before2)
}

// TestFleetFaultInOneCluster: the snapshot of the second cluster is cut;
// the first cluster's backup is whole, the second is undone (replicas back,
// unpaused, lock released, no half-written object), the fleet exits 6 and
// its summary names both.
func TestFleetFaultInOneCluster(t *testing.T) {
	one, two := fleetEnvs(t)
	before1, before2 := one.state(t), two.state(t)
	const prefix = "fleet-fault"
	// `until=$2` is in the script that starts etcdctl in the pod (see
	// TestExecStreamCut).
	one.setFaults(t, nodeagent.Faults{CutExec: []nodeagent.CutExec{{Pod: two.hcpNamespace + "/etcd-0", Match: "until=$2", AfterMillis: 1}}})
	t.Cleanup(func() { one.setFaults(t, nodeagent.Faults{}) })
	r := one.startHcpsnap(t, t.TempDir(), noClusterEnv, "backup", "--selector", fleetSelector, "--parallel", "2", "--via", "exec", "--prefix", prefix)
	code := r.wait(t)
	one.setFaults(t, nodeagent.Faults{})
	if exitcode.Code(code) != exitcode.Partial {
		t.Fatalf("fleet exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitcode.Partial, r.stdout.String(), r.stderr.String())
	}
	out := r.stdout.String()
	for _, want := range []string{"1 of 2 clusters backed up", one.namespace + "/" + one.cluster + "    succeeded", two.namespace + "/" + two.cluster + "  failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if last := lastLine(r.stderr.String()); !strings.Contains(last, "1 of 2 clusters' backups failed ("+two.namespace+"/"+two.cluster+")") {
		t.Errorf("last stderr line %q", last)
	}
	// Each cluster's log lines say which cluster they are about.
	for _, e := range []*testEnv{one, two} {
		if !regexp.MustCompile(`(?m)cluster=` + regexp.QuoteMeta(e.namespace+"/"+e.cluster) + `(\s|$)`).MatchString(r.stderr.String()) {
			t.Errorf("no log line carries cluster=%s/%s:\n%s", e.namespace, e.cluster, r.stderr.String())
		}
	}
	one.checkFleetBackup(t, prefix, map[string]any{"result": "succeeded", "manifest": manifestURLIn(out)})
	one.checkClusterAsBefore(t, before1)
	one.checkReleased(t)
	// The failed cluster: restored, released, and nothing of a backup left.
	two.invariants(t, before2, prefix+"/"+two.cluster)
	if keys := two.awsList(t, two.bucket, prefix+"/"+two.cluster); len(keys) != 0 {
		t.Errorf("the failed cluster's backup left %v", keys)
	}
}

// manifestURLIn returns the one manifest URL of a fleet's text summary.
func manifestURLIn(summary string) string {
	for _, f := range strings.Fields(summary) {
		if strings.HasPrefix(f, "s3://") && strings.HasSuffix(f, "/manifest.json") {
			return f
		}
	}
	return ""
}

// TestFleetSelectorMatchesNothing: one line, exit 3, nothing changed.
func TestFleetSelectorMatchesNothing(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	hcBefore, err := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster)
	if err != nil {
		t.Fatal(err)
	}
	objsBefore := env.listObjects(t, "")
	r := env.startHcpsnap(t, t.TempDir(), noClusterEnv, "backup", "--selector", fleetLabel+"=nobody", "--prefix", "fleet-none")
	code := r.wait(t)
	stderr := strings.TrimSpace(r.stderr.String())
	if exitcode.Code(code) != exitcode.Precondition || strings.Contains(stderr, "\n") ||
		!strings.Contains(stderr, `no HostedCluster matches selector "`+fleetLabel+`=nobody" in namespace `+env.namespace) {
		t.Fatalf("exit %d, stderr %q; want 3 and one line naming the selector", code, stderr)
	}
	if r.stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing", r.stdout.String())
	}
	hcAfter, err := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if hcAfter.ResourceVersion != hcBefore.ResourceVersion {
		t.Errorf("the HostedCluster changed: resourceVersion %s → %s", hcBefore.ResourceVersion, hcAfter.ResourceVersion)
	}
	if got := env.listObjects(t, ""); strings.Join(got, ",") != strings.Join(objsBefore, ",") {
		t.Errorf("the bucket changed: %v → %v", objsBefore, got)
	}
}

// TestFleetDryRun: a fleet's dry run lists the clusters and prints each
// one's runbook with its own values, changing nothing.
func TestFleetDryRun(t *testing.T) {
	one, two := fleetEnvs(t)
	ctx := context.Background()
	var rvs []string
	for _, e := range []*testEnv{one, two} {
		hc, err := e.hyper.GetHostedCluster(ctx, e.namespace, e.cluster)
		if err != nil {
			t.Fatal(err)
		}
		rvs = append(rvs, hc.ResourceVersion)
	}
	objsBefore := one.listObjects(t, "")
	r := one.startHcpsnap(t, t.TempDir(), noClusterEnv, "backup", "--selector", fleetSelector, "--dry-run", "--prefix", "fleet-dry")
	if code := r.wait(t); code != 0 {
		t.Fatalf("dry run exit %d\nstderr:\n%s", code, r.stderr.String())
	}
	out := r.stdout.String()
	for _, want := range []string{"Fleet backup of 2 HostedClusters, at most 1 at once", "  " + one.namespace + "/" + one.cluster + "\n", "  " + two.namespace + "/" + two.cluster + "\n",
		"-n " + one.hcpNamespace + " ", "-n " + two.hcpNamespace + " ", "fleet-dry/" + one.cluster + "/", "fleet-dry/" + two.cluster + "/"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	if n := strings.Count(out, "pause-reconciliation"); n < 2 {
		t.Errorf("dry run names pause-reconciliation %d times, want a runbook per cluster", n)
	}
	for i, e := range []*testEnv{one, two} {
		hc, err := e.hyper.GetHostedCluster(ctx, e.namespace, e.cluster)
		if err != nil {
			t.Fatal(err)
		}
		if hc.ResourceVersion != rvs[i] {
			t.Errorf("the dry run changed HostedCluster %s/%s", e.namespace, e.cluster)
		}
	}
	if got := one.listObjects(t, ""); strings.Join(got, ",") != strings.Join(objsBefore, ",") {
		t.Errorf("the dry run changed the bucket: %v → %v", objsBefore, got)
	}
}

// TestFleetInterrupted: SIGINT while the first cluster's API is down undoes
// that backup and starts no other; exit 130, both clusters as they were.
func TestFleetInterrupted(t *testing.T) {
	one, two := fleetEnvs(t)
	before1, before2 := one.state(t), two.state(t)
	const prefix = "fleet-int"
	r := one.startHcpsnap(t, t.TempDir(), noClusterEnv, "-o", "json", "backup", "--selector", fleetSelector, "--parallel", "1", "--prefix", prefix)
	r.waitEvent(t, "scale-down done", stepDone("scale-down-apiservers"))
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	if code := r.wait(t); exitcode.Code(code) != exitcode.Interrupted {
		t.Fatalf("exit %d, want 130\nstderr:\n%s", code, r.stderr.String())
	}
	if last := lastLine(r.stderr.String()); !strings.Contains(last, "interrupted") || !strings.Contains(last, "undone") {
		t.Errorf("last message %q does not say it was interrupted and undone", last)
	}
	results := clusterResults(t, r.stdout.String())
	if got := results[one.namespace+"/"+one.cluster]["result"]; got != "interrupted" {
		t.Errorf("%s: result %v, want interrupted", one.cluster, got)
	}
	if got := results[two.namespace+"/"+two.cluster]["result"]; got != "not-started" {
		t.Errorf("%s: result %v, want not-started", two.cluster, got)
	}
	one.invariants(t, before1, prefix+"/"+one.cluster)
	two.invariants(t, before2, prefix+"/"+two.cluster)
	if got := one.listObjects(t, prefix+"/"); len(got) != 0 {
		t.Fatalf("an interrupted fleet left objects: %v", got)
	}
}

// TestFleetSameNameInTwoNamespaces: backups live under <prefix>/<name>/, so
// a HostedCluster of the same name in another namespace shares the folder.
// `backups` names each one's namespace, and `restore --latest` refuses to
// guess between them. (A fleet refuses to back both up in one run: unit
// tested in internal/command.)
func TestFleetSameNameInTwoNamespaces(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	const prefix = "fleet-ns"
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--online", "--prefix", prefix)
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	// The same backup as if HostedCluster other/<name> had written it later.
	m := env.readManifest(t, lastSummary(t, res.stdout).Manifest)
	m.Namespace, m.HCPNamespace = "other", "other-"+env.cluster
	m.Times.Finished = m.Times.Finished.Add(time.Hour)
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	key := prefix + "/" + env.cluster + "/20990101T000000Z/manifest.json"
	if _, err := env.s3Client(env.vars["AWS_SECRET_ACCESS_KEY"]).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}

	res = env.hcpsnap(t, t.TempDir(), "backups", "--prefix", prefix)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "CLUSTER") ||
		!strings.HasPrefix(lines[1], env.namespace+"/"+env.cluster+" ") || !strings.HasPrefix(lines[2], "other/"+env.cluster+" ") {
		t.Fatalf("backups --cluster %s (exit %d):\n%s", env.cluster, res.code, res.stdout)
	}
	res = env.hcpsnap(t, t.TempDir(), "restore", "--latest", "--prefix", prefix, "-f", renderFile, "--out", t.TempDir()+"/out.yaml")
	if last := lastLine(res.stderr); exitcode.Code(res.code) != exitcode.Precondition || !strings.Contains(last, "several namespaces ("+env.namespace+", other)") {
		t.Fatalf("restore --latest: exit %d, %q; want 3 naming both namespaces", res.code, last)
	}
}
