//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/e2e/localenv"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/pullnode"
	"github.com/hcpsnap/hcpsnap/schedule"
)

// mgmtEtcd is the management cluster's own etcd of the local environment
// (plain HTTP on loopback), the one a master's cluster-backup.sh snapshots.
const mgmtEtcd = "http://127.0.0.1:32379"

// nodeTarget makes a target folder on the "node" (the node agent serves
// hostPath volumes from the host) under /var/tmp, an allowed place, and
// removes it at the end.
func nodeTarget(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	dir := "/var/tmp/hcpsnap-e2e-" + hex.EncodeToString(b[:])
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// scriptRun writes one folder as the snapshot script leaves it: a real
// snapshot of the management etcd taken with etcdctl, and a
// static_kuberesources archive, both root's 0600 as cluster-backup.sh makes
// them; with suffix ".partial" it is a run in progress.
func (e *testEnv) scriptRun(t *testing.T, target, ts, suffix string) (snapshot, archive []byte) {
	t.Helper()
	dir := filepath.Join(target, ts+suffix)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stamp := strings.ReplaceAll(ts, "T", "_")
	snap := filepath.Join(dir, "snapshot_"+stamp+".db")
	out, err := exec.Command(e.vars["ETCDCTL"], "--endpoints", mgmtEtcd, "snapshot", "save", snap).CombinedOutput()
	if err != nil {
		t.Fatalf("etcdctl snapshot save: %v: %s", err, out)
	}
	if err := os.Chmod(snap, 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range []string{"static-pod-resources/etcd-pod-1/etcd-pod.yaml", "static-pod-resources/kube-apiserver-pod-2/pod.yaml"} {
		body := []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + filepath.Base(filepath.Dir(name)) + "\n")
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(body)), ModTime: time.Unix(0, 0)})
		tw.Write(body)
	}
	tw.Close()
	gz.Close()
	if err := os.WriteFile(filepath.Join(dir, "static_kuberesources_"+stamp+".tar.gz"), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	return data, buf.Bytes()
}

// pullNodePods lists the pods pull-node made for the environment's node.
func (e *testEnv) pullNodePods(t *testing.T) []string {
	t.Helper()
	pods, err := e.kube.CoreV1().Pods(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{LabelSelector: pullnode.Selector(localenv.NodeName)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	return names
}

// multipartUploads lists the unfinished multipart uploads of the objects
// with the aws CLI: of each key (MinIO lists uploads by object name, not by
// any prefix), and of the whole bucket, filtered by the keys.
func (e *testEnv) multipartUploads(t *testing.T, keys ...string) []string {
	t.Helper()
	var found []string
	for _, prefix := range append([]string{""}, keys...) {
		args := []string{"s3api", "list-multipart-uploads", "--bucket", e.bucket,
			"--endpoint-url", e.vars["AWS_ENDPOINT_URL_S3"], "--query", "Uploads[].Key", "--output", "json"}
		if prefix != "" {
			args = append(args, "--prefix", prefix)
		}
		cmd := exec.Command("aws", args...)
		for k, v := range e.vars {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"), "HOME="+t.TempDir())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("aws s3api list-multipart-uploads: %v: %s", err, stderr.String())
		}
		var ks []string
		if s := strings.TrimSpace(string(out)); s != "" && s != "null" {
			if err := json.Unmarshal(out, &ks); err != nil {
				t.Fatalf("aws CLI output %q: %v", out, err)
			}
		}
		for _, k := range ks {
			if slices.Contains(keys, k) && !slices.Contains(found, k) {
				found = append(found, k)
			}
		}
	}
	return found
}

// pullLines parses pull-node's NDJSON output by folder.
func pullLines(t *testing.T, stdout string) map[string]pullnode.Result {
	t.Helper()
	lines := map[string]pullnode.Result{}
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if l == "" {
			continue
		}
		var r pullnode.Result
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.MessageType != "pull" {
			t.Fatalf("not a pull line: %q", l)
		}
		lines[r.Folder] = r
	}
	return lines
}

// checkManagementBackup downloads a pulled backup and checks it against
// the node's files and with etcdutl, an independent reader.
func (e *testEnv) checkManagementBackup(t *testing.T, prefix, ts string, snap, archive []byte) *manifest.Manifest {
	t.Helper()
	snapKey, staticKey, manifestKey := pullnode.Keys(prefix, ts)
	m := e.readManifest(t, "s3://"+e.bucket+"/"+manifestKey)
	fileSum, archiveSum := sha256.Sum256(snap), sha256.Sum256(archive)
	switch {
	case !m.IsManagement() || m.Node != localenv.NodeName || m.Cluster != manifest.ManagementSeries:
		t.Fatalf("manifest of %s: source %q, node %q, cluster %q", ts, m.Source, m.Node, m.Cluster)
	case m.Snapshot.Key != snapKey || m.Snapshot.Size != int64(len(snap)) || m.Snapshot.SHA256 != hex.EncodeToString(fileSum[:]):
		t.Fatalf("manifest of %s: snapshot %+v, want the node file's size %d and sha256", ts, m.Snapshot, len(snap))
	case m.StaticResources == nil || m.StaticResources.Key != staticKey || m.StaticResources.SHA256 != hex.EncodeToString(archiveSum[:]):
		t.Fatalf("manifest of %s: static resources %+v", ts, m.StaticResources)
	case m.Etcd.SHA256 != hex.EncodeToString(snap[len(snap)-32:]):
		t.Fatalf("manifest of %s: etcd sha256 %s is not the snapshot's trailing hash", ts, m.Etcd.SHA256)
	case m.Original == nil || !strings.HasPrefix(m.Original.Snapshot, "snapshot_") || m.Original.Folder != ts:
		t.Fatalf("manifest of %s: original names %+v", ts, m.Original)
	case m.KeyBundle.Key != "" || m.KeyBundle.File != "":
		t.Fatalf("manifest of %s names a key bundle", ts)
	}
	if got := e.get(t, "s3://"+e.bucket+"/"+staticKey); !bytes.Equal(got, archive) {
		t.Fatalf("static resources of %s differ from the node's file", ts)
	}
	// The object is the node's file, and etcdutl reads what the manifest says.
	data := e.get(t, "s3://"+e.bucket+"/"+snapKey)
	if !bytes.Equal(data, snap) {
		t.Fatalf("snapshot of %s differs from the node's file", ts)
	}
	p := filepath.Join(t.TempDir(), "snapshot.db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(e.vars["ETCDUTL"], "snapshot", "status", p, "-w", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v: %s", err, out)
	}
	var st struct {
		Revision  int64  `json:"revision"`
		TotalKey  int64  `json:"totalKey"`
		TotalSize int64  `json:"totalSize"`
		Version   string `json:"version"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("etcdutl output %q: %v", out, err)
	}
	if st.Revision != m.Etcd.Revision || st.TotalSize != m.Etcd.TotalSize || st.Version != m.Etcd.StorageVersion {
		t.Fatalf("etcdutl says revision %d, size %d, version %q; manifest says %d, %d, %q", st.Revision, st.TotalSize, st.Version, m.Etcd.Revision, m.Etcd.TotalSize, m.Etcd.StorageVersion)
	}
	if st.TotalKey < 100 {
		t.Fatalf("management snapshot holds only %d keys", st.TotalKey)
	}
	return m
}

// TestPullNode: the complete folders of a node's target go to the bucket,
// verified; a second run uploads nothing; backups --management lists them,
// prune --management prunes them; restore refuses them with the hint.
func TestPullNode(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	target := nodeTarget(t)
	prefix := uniquePrefix("pull-node")
	complete := []string{"20260301T020000Z", "20260302T020000Z"}
	files := map[string][2][]byte{}
	for _, ts := range complete {
		s, a := env.scriptRun(t, target, ts, "")
		files[ts] = [2][]byte{s, a}
	}
	// A run in progress, a failed one and junk, none of which is read.
	env.scriptRun(t, target, "20260303T020000Z", ".partial")
	if err := os.Mkdir(filepath.Join(target, "20260304T020000Z.partial"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(target, "README"), []byte("junk"), 0o600)
	os.Mkdir(filepath.Join(target, "2026-03-05"), 0o700)

	args := []string{"-o", "json", "pull-node", "--node", localenv.NodeName, "--target-dir", target, "--image", image, "--prefix", prefix}
	r := env.hcpsnap(t, t.TempDir(), args...)
	if r.code != 0 {
		t.Fatalf("pull-node: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	lines := pullLines(t, r.stdout)
	want := map[string]string{complete[0]: "uploaded", complete[1]: "uploaded", "20260303T020000Z.partial": "skipped",
		"20260304T020000Z.partial": "skipped", "README": "skipped", "2026-03-05": "skipped"}
	for f, res := range want {
		if lines[f].Result != res {
			t.Errorf("%s: %q (%s), want %s", f, lines[f].Result, lines[f].Reason, res)
		}
	}
	if len(lines) != len(want) {
		t.Errorf("%d lines, want %d: %s", len(lines), len(want), r.stdout)
	}
	var wantKeys []string
	for _, ts := range complete {
		s, a, m := pullnode.Keys(prefix, ts)
		wantKeys = append(wantKeys, s, a, m)
	}
	slices.Sort(wantKeys)
	if got := env.awsList(t, env.bucket, prefix); !slices.Equal(got, wantKeys) {
		t.Fatalf("bucket holds %q\nwant exactly %q", got, wantKeys)
	}
	for _, ts := range complete {
		env.checkManagementBackup(t, prefix, ts, files[ts][0], files[ts][1])
	}
	if pods := env.pullNodePods(t); len(pods) != 0 {
		t.Errorf("pods left: %q", pods)
	}

	// A second run uploads nothing new.
	before := env.awsList(t, env.bucket, prefix)
	r = env.hcpsnap(t, t.TempDir(), args...)
	if r.code != 0 {
		t.Fatalf("second pull-node: exit %d\n%s", r.code, r.stderr)
	}
	lines = pullLines(t, r.stdout)
	for _, ts := range complete {
		if lines[ts].Result != "already-stored" {
			t.Errorf("second run: %s %q, want already-stored", ts, lines[ts].Result)
		}
	}
	if got := env.awsList(t, env.bucket, prefix); !slices.Equal(got, before) {
		t.Errorf("second run changed the bucket: %q", got)
	}

	// backups --management lists both, newest first, with the node.
	r = env.prune(t, "backups", "--management", "--prefix", prefix)
	if r.code != 0 {
		t.Fatalf("backups --management: exit %d\n%s", r.code, r.stderr)
	}
	i0, i1 := strings.Index(r.stdout, "2026-03-01T02:00:00Z"), strings.Index(r.stdout, "2026-03-02T02:00:00Z")
	if !strings.Contains(r.stdout, localenv.NodeName) || i0 < 0 || i1 < 0 || i1 > i0 {
		t.Errorf("backups --management:\n%s", r.stdout)
	}
	// Without a series, they show as "management".
	r = env.prune(t, "backups", "--prefix", prefix)
	if r.code != 0 || !strings.Contains(r.stdout, "management") {
		t.Errorf("backups: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// restore refuses a management backup, in one line with the hint.
	_, _, manifestKey := pullnode.Keys(prefix, complete[1])
	r = env.hcpsnap(t, t.TempDir(), "restore", "--from", "s3://"+env.bucket+"/"+manifestKey, "-f", "/dev/null")
	if r.code != 3 || !strings.Contains(r.stderr, "cluster-restore.sh") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("restore of a management backup: exit %d\n%s", r.code, r.stderr)
	}

	// prune --management --keep-last 1 keeps the newest, whole.
	r = env.prune(t, "-o", "json", "prune", "--management", "--prefix", prefix, "--keep-last", "1")
	if r.code != 0 {
		t.Fatalf("prune --management: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	s, a, m := pullnode.Keys(prefix, complete[1])
	wantKeys = []string{m, s, a}
	slices.Sort(wantKeys)
	if got := env.awsList(t, env.bucket, prefix); !slices.Equal(got, wantKeys) {
		t.Errorf("after prune the bucket holds %q\nwant %q", got, wantKeys)
	}
}

// TestPullNodeInterrupted: SIGINT in the middle of a copy ends with exit
// 130, no pod and no multipart upload left, and nothing in the bucket.
func TestPullNodeInterrupted(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	target := nodeTarget(t)
	prefix := uniquePrefix("pull-node-sigint")
	ts := "20260301T020000Z"
	// A large file stands for a large snapshot, so that the copy takes long
	// enough to be interrupted: a real snapshot of the management etcd
	// (whose meta pages the stream's scanner reads), then random bytes (the
	// copy would fail etcd's check at its end, long after the interrupt).
	snap, _ := env.scriptRun(t, target, ts, "")
	dir := filepath.Join(target, ts)
	p := filepath.Join(dir, "snapshot_"+strings.ReplaceAll(ts, "T", "_")+".db")
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, 512<<20-int64(len(snap))); err != nil {
		t.Fatal(err)
	}
	f.Close()

	snapKey, staticKey, _ := pullnode.Keys(prefix, ts)
	run := env.startHcpsnap(t, t.TempDir(), nil, "pull-node", "--node", localenv.NodeName, "--target-dir", target, "--image", image,
		"--prefix", prefix, "--concurrency", "1")
	deadline := time.Now().Add(2 * time.Minute)
	// Polled with the SDK, which answers in milliseconds (the aws CLI takes
	// about a second to start); checked with the CLI at the end.
	client := env.s3Client(env.vars["AWS_SECRET_ACCESS_KEY"])
	for {
		out, err := client.ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: &env.bucket, Prefix: aws.String(snapKey)})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Uploads) > 0 {
			break
		}
		select {
		case <-run.done:
			t.Fatalf("pull-node ended (exit %d) before its upload began\n%s", run.code, run.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no multipart upload within 2 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := run.wait(t); code != 130 {
		t.Fatalf("exit %d after SIGINT, want 130\n%s", code, run.stderr.String())
	}
	if pods := env.pullNodePods(t); len(pods) != 0 {
		t.Errorf("pods left after SIGINT: %q", pods)
	}
	if ups := env.multipartUploads(t, snapKey, staticKey); len(ups) != 0 {
		t.Errorf("multipart uploads left after SIGINT: %q", ups)
	}
	// The check sees an upload that is left: one made here, then aborted.
	probe := prefix + "/probe"
	up, err := client.CreateMultipartUpload(context.Background(), &awss3.CreateMultipartUploadInput{Bucket: &env.bucket, Key: &probe})
	if err != nil {
		t.Fatal(err)
	}
	seen := env.multipartUploads(t, probe)
	client.AbortMultipartUpload(context.Background(), &awss3.AbortMultipartUploadInput{Bucket: &env.bucket, Key: &probe, UploadId: up.UploadId})
	if len(seen) != 1 {
		t.Errorf("the multipart upload check does not see an upload left: %q", seen)
	}
	if keys := env.awsList(t, env.bucket, prefix); len(keys) != 0 {
		t.Errorf("bucket holds %q after SIGINT", keys)
	}
}

// TestPullNodeBadInput: each invalid value is one line and its exit code,
// and neither a pod nor an object is made.
func TestPullNodeBadInput(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	target := nodeTarget(t)
	env.scriptRun(t, target, "20260301T020000Z", "")
	prefix := uniquePrefix("pull-node-bad")
	base := []string{"pull-node", "--prefix", prefix}
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no node", []string{"--target-dir", target, "--image", image}, 2, "--node is required"},
		{"bad node name", []string{"--node", "Node_1", "--target-dir", target, "--image", image}, 2, "not a valid node name"},
		{"missing node", []string{"--node", "master-9", "--target-dir", target, "--image", image}, 3, "node master-9 not found"},
		{"target outside", []string{"--node", localenv.NodeName, "--target-dir", "/etc", "--image", image}, 2, "outside the allowed places"},
		{"target on tmpfs", []string{"--node", localenv.NodeName, "--target-dir", "/tmp/snapshots", "--image", image}, 2, "--allow-tmpfs"},
		{"target etcd's", []string{"--node", localenv.NodeName, "--target-dir", "/var/lib/etcd", "--image", image}, 2, "/var/lib/etcd"},
		{"relative target", []string{"--node", localenv.NodeName, "--target-dir", "var/tmp", "--image", image}, 2, "absolute"},
		{"no image", []string{"--node", localenv.NodeName, "--target-dir", target}, 2, "--image is required"},
		{"image by tag", []string{"--node", localenv.NodeName, "--target-dir", target, "--image", "registry.example/hcpsnap:latest"}, 2, "--image"},
		{"bad namespace", []string{"--node", localenv.NodeName, "--target-dir", target, "--image", image, "--pod-namespace", "No"}, 2, "--pod-namespace"},
		{"short deadline", []string{"--node", localenv.NodeName, "--target-dir", target, "--image", image, "--pod-deadline", "5s"}, 2, "--pod-deadline"},
		{"bad part size", []string{"--node", localenv.NodeName, "--target-dir", target, "--image", image, "--part-size-mib", "2"}, 2, "--part-size-mib"},
		{"unknown flag", []string{"--node", localenv.NodeName, "--target-dir", target, "--image", image, "--bogus"}, 2, "bogus"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := env.hcpsnap(t, t.TempDir(), append(append([]string{}, base...), c.args...)...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r.stderr)
			}
			msg := strings.TrimSpace(r.stderr)
			if !strings.Contains(msg, c.want) || strings.Count(msg, "\n") != 0 {
				t.Errorf("stderr %q, want one line with %q", msg, c.want)
			}
			if pods := env.pullNodePods(t); len(pods) != 0 {
				t.Errorf("pods made: %q", pods)
			}
			if keys := env.awsList(t, env.bucket, prefix); len(keys) != 0 {
				t.Errorf("objects made: %q", keys)
			}
		})
	}
}

// TestSchedulePullNodeRunsForReal applies `schedule pull-node` with the
// image `make image` built, starts a Job from its CronJob as `kubectl create
// job --from` does, and checks that the job's pull-node, with only the
// schedule's permissions, copied the node's snapshot; then --delete removes
// every object of the schedule.
func TestSchedulePullNodeRunsForReal(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	ctx := context.Background()
	env.deleteHcpsnapObjects(t)
	t.Cleanup(func() { env.deleteHcpsnapObjects(t) })
	env.createS3Secret(t, env.namespace)
	target := nodeTarget(t)
	ts := "20260301T020000Z"
	snap, archive := env.scriptRun(t, target, ts, "")
	prefix := uniquePrefix("scheduled-pull-node")
	name := schedule.DefaultPullNodeName(localenv.NodeName)

	args := []string{"schedule", "pull-node", "--node", localenv.NodeName, "--schedule", "0 3 1 1 *", "--job-namespace", env.namespace,
		"--image", image, "--s3-credentials-secret", scheduleSecret, "--s3-endpoint", env.vars["AWS_ENDPOINT_URL_S3"], "--region", env.vars["AWS_REGION"],
		"--target-dir", target, "--prefix", prefix}
	if res := env.hcpsnap(t, t.TempDir(), append(args, "--dry-run=server")...); res.code != 0 {
		t.Fatalf("schedule pull-node --dry-run=server: exit %d: %s", res.code, res.stderr)
	}
	if objs := env.hcpsnapObjects(t); len(objs) != 0 {
		t.Fatalf("a server-side dry run left %q", objs)
	}
	if res := env.hcpsnap(t, t.TempDir(), append(args, "--apply")...); res.code != 0 {
		t.Fatalf("schedule pull-node --apply: exit %d: %s", res.code, res.stderr)
	}
	kubectl := filepath.Join(env.vars["LOCALENV_BIN_DIR"], "kubectl")
	job := name + "-1"
	cmd := exec.Command(kubectl, "create", "job", job, "--from=cronjob/"+name, "-n", env.namespace)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.vars["KUBECONFIG"])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl create job --from: %v: %s", err, out)
	}
	deadline := time.Now().Add(5 * time.Minute)
	var result schedule.Result
	for result == "" && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		j, err := env.kube.BatchV1().Jobs(env.namespace).Get(ctx, job, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range j.Status.Conditions {
			if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
				result = schedule.Result(c.Type)
			}
		}
	}
	if result != schedule.ResultComplete {
		t.Fatalf("Job %s ended %q, want Complete; its pods:\n%s", job, result, env.podReport(t, job))
	}
	s, a, m := pullnode.Keys(prefix, ts)
	want := []string{m, s, a}
	slices.Sort(want)
	if got := env.awsList(t, env.bucket, prefix); !slices.Equal(got, want) {
		t.Fatalf("bucket holds %q\nwant %q", got, want)
	}
	env.checkManagementBackup(t, prefix, ts, snap, archive)
	if pods := env.pullNodePods(t); len(pods) != 0 {
		t.Errorf("pull-node pods left: %q", pods)
	}

	del := []string{"schedule", "pull-node", "--node", localenv.NodeName, "--job-namespace", env.namespace, "--delete"}
	if res := env.hcpsnap(t, t.TempDir(), del...); res.code != 0 {
		t.Fatalf("schedule pull-node --delete: exit %d: %s", res.code, res.stderr)
	}
	for _, o := range env.hcpsnapObjects(t) {
		if strings.Contains(o, name) {
			t.Errorf("%s left after --delete", o)
		}
	}
}

// TestPullNodeRefusesADamagedSnapshot: a file that is not an etcd snapshot
// fails its copy as soon as that shows (exit 4): no object, no multipart
// upload and no pod are left, and the log is hcpsnap's alone (the exec
// stream cut short is not reported by client-go on stderr).
func TestPullNodeRefusesADamagedSnapshot(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	target := nodeTarget(t)
	prefix := uniquePrefix("pull-node-damaged")
	ts := "20260301T020000Z"
	env.scriptRun(t, target, ts, "")
	p := filepath.Join(target, ts, "snapshot_"+strings.ReplaceAll(ts, "T", "_")+".db")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, 100<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := env.hcpsnap(t, t.TempDir(), "pull-node", "--node", localenv.NodeName, "--target-dir", target, "--image", image, "--prefix", prefix)
	if r.code != 4 || !strings.Contains(r.stderr, "not a bbolt database") {
		t.Fatalf("exit %d, want 4 for a snapshot that is not one\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "Unhandled Error") {
		t.Errorf("client-go logged on stderr:\n%s", r.stderr)
	}
	if !strings.Contains(r.stdout, ts+"  failed") {
		t.Errorf("stdout %q, want the folder failed", r.stdout)
	}
	snapKey, staticKey, _ := pullnode.Keys(prefix, ts)
	if keys := env.awsList(t, env.bucket, prefix); len(keys) != 0 {
		t.Errorf("bucket holds %q", keys)
	}
	if ups := env.multipartUploads(t, snapKey, staticKey); len(ups) != 0 {
		t.Errorf("multipart uploads left: %q", ups)
	}
	if pods := env.pullNodePods(t); len(pods) != 0 {
		t.Errorf("pods left: %q", pods)
	}
}

// TestPullNodeCleansUpAfterAKilledRun: the pods an earlier run left (a
// killed hcpsnap cannot delete its pod) are handled by the next run: one
// that ended is deleted, one still running is warned about and left to its
// deadline.
func TestPullNodeCleansUpAfterAKilledRun(t *testing.T) {
	env := loadEnv(t)
	image := hcpsnapImage(t)
	ctx := context.Background()
	target := nodeTarget(t)
	prefix := uniquePrefix("pull-node-stale")
	leftover := func(name string, command ...string) {
		t.Helper()
		pod := pullnode.PodSpec(pullnode.Options{Node: localenv.NodeName, TargetDir: target, Image: image, PodNamespace: "default", PodDeadline: 10 * time.Minute})
		pod.GenerateName, pod.Name = "", name
		pod.Spec.Containers[0].Command = command
		if _, err := env.kube.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Gone before the next test, which counts pull-node's pods.
			_ = env.kube.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{})
			for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
				if _, err := env.kube.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
					return
				}
			}
			t.Errorf("leftover pod %s not gone a minute after its deletion", name)
		})
	}
	leftover("hcpsnap-pull-node-ended", pullnode.Binary, "version")
	leftover("hcpsnap-pull-node-running", pullnode.Binary, pullnode.NodeFilesCommand, "wait", "--deadline", "10m")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ended, err := env.kube.CoreV1().Pods("default").Get(ctx, "hcpsnap-pull-node-ended", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running, err := env.kube.CoreV1().Pods("default").Get(ctx, "hcpsnap-pull-node-running", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ended.Status.Phase == corev1.PodSucceeded && running.Status.Phase == corev1.PodRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leftover pods are %s and %s, want Succeeded and Running", ended.Status.Phase, running.Status.Phase)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := env.hcpsnap(t, t.TempDir(), "pull-node", "--node", localenv.NodeName, "--target-dir", target, "--image", image, "--prefix", prefix)
	if r.code != 0 {
		t.Fatalf("pull-node: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "hcpsnap-pull-node-running") || !strings.Contains(r.stderr, "still there") {
		t.Errorf("no warning about the running leftover:\n%s", r.stderr)
	}
	if pods := env.pullNodePods(t); !slices.Equal(pods, []string{"default/hcpsnap-pull-node-running"}) {
		t.Errorf("pods after the run: %q, want only the running leftover", pods)
	}
}
