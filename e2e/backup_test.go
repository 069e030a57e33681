//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// hcpsnapResult is one run of the built binary.
type hcpsnapResult struct {
	stdout, stderr string
	code           int
}

// hcpsnap runs the built binary as a user would, with the environment's
// settings (KUBECONFIG, AWS_*, HCPSNAP_*) and a private state folder, and
// waits for it to end.
func (e *testEnv) hcpsnap(t *testing.T, stateDir string, args ...string) hcpsnapResult {
	t.Helper()
	r := e.startHcpsnap(t, stateDir, nil, args...)
	code := r.wait(t)
	return hcpsnapResult{r.stdout.String(), r.stderr.String(), code}
}

// clusterState is what a backup must leave as it found it.
type clusterState struct {
	pausedUntil *string
	replicas    map[string]int32
}

func (e *testEnv) state(t *testing.T) clusterState {
	t.Helper()
	hc, err := e.hyper.GetHostedCluster(context.Background(), e.namespace, e.cluster)
	if err != nil {
		t.Fatal(err)
	}
	s := clusterState{pausedUntil: hc.Spec.PausedUntil, replicas: map[string]int32{}}
	for _, d := range []string{"kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver"} {
		s.replicas[d] = e.replicas(t, d)
	}
	return s
}

func TestBackup(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	future := time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339)
	truth := "true"
	originals := []struct {
		name        string
		pausedUntil *string
	}{
		{"pausedUntil absent", nil},
		{"pausedUntil a date", &future},
		{"pausedUntil true", &truth},
	}
	for _, tt := range originals {
		t.Run(tt.name, func(t *testing.T) {
			setPausedUntil(t, env, tt.pausedUntil)
			defer setPausedUntil(t, env, nil)
			before := env.state(t)
			stateDir := t.TempDir()
			res := env.hcpsnap(t, stateDir, "-o", "json", "backup", "--key-prefix", "e2e-keys")
			if res.code != 0 {
				t.Fatalf("backup exit %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
			}
			sum := lastSummary(t, res.stdout)

			env.checkClusterAsBefore(t, before)

			m := env.readManifest(t, sum.Manifest)
			env.checkSnapshot(t, m)
			env.checkKeyBundle(t, m)
			env.checkNoPodFile(t)
			env.checkNoMultipartUploads(t)
			if m.DowntimeSeconds <= 0 {
				t.Errorf("manifest downtime %v, want > 0", m.DowntimeSeconds)
			}
			hc, err := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster)
			if err != nil {
				t.Fatal(err)
			}
			if _, held := hc.Annotations["hcpsnap.io/backup-run"]; held {
				t.Errorf("the run annotation is still on the HostedCluster")
			}
		})
	}
}

func TestBackupDryRunChangesNothing(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	hcBefore, _ := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster)
	objsBefore := env.listObjects(t, "")
	deployBefore := env.deploymentVersions(t)
	for _, format := range []string{"text", "markdown", "json"} {
		res := env.hcpsnap(t, t.TempDir(), "-o", format, "backup", "--dry-run")
		if res.code != 0 {
			t.Fatalf("dry run (%s) exit %d: %s", format, res.code, res.stderr)
		}
		for _, want := range []string{"pause-reconciliation", "etcd-0", "kube-apiserver", env.namespace + "-" + env.cluster, "snapshot.db", "etcdctl"} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("dry run (%s) output lacks %q", format, want)
			}
		}
	}
	hcAfter, _ := env.hyper.GetHostedCluster(ctx, env.namespace, env.cluster)
	if hcAfter.Spec.PausedUntil != nil || hcAfter.Annotations["hcpsnap.io/backup-run"] != "" {
		t.Errorf("the dry run changed the HostedCluster")
	}
	if hcBefore.Generation != hcAfter.Generation {
		t.Errorf("HostedCluster generation %d → %d", hcBefore.Generation, hcAfter.Generation)
	}
	if got := env.deploymentVersions(t); !equalMaps(deployBefore, got) {
		t.Errorf("the dry run changed Deployments: %v → %v", deployBefore, got)
	}
	if got := env.listObjects(t, ""); strings.Join(got, ",") != strings.Join(objsBefore, ",") {
		t.Errorf("the dry run changed the bucket: %v → %v", objsBefore, got)
	}
}

func TestBackupOnline(t *testing.T) {
	env := loadEnv(t)
	for _, via := range vias {
		t.Run("via "+via, func(t *testing.T) { backupOnline(t, env, via) })
	}
}

func backupOnline(t *testing.T, env *testEnv, via string) {
	versions := env.deploymentVersions(t)
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--online", "--via", via, "--prefix", "online-"+via)
	if res.code != 0 {
		t.Fatalf("online backup exit %d: %s", res.code, res.stderr)
	}
	sum := lastSummary(t, res.stdout)
	if got := env.deploymentVersions(t); !equalMaps(versions, got) {
		t.Errorf("an online backup changed Deployments: %v → %v", versions, got)
	}
	m := env.readManifest(t, sum.Manifest)
	if !m.Online || m.DowntimeSeconds != 0 {
		t.Errorf("manifest online=%v downtime=%v, want true, 0", m.Online, m.DowntimeSeconds)
	}
	env.checkSnapshot(t, m)
	env.checkNoPodFile(t)
}

// ---------------------------------------------------------------------------

type summary struct {
	MessageType string `json:"message_type"`
	Manifest    string `json:"manifest"`
	Snapshot    string `json:"snapshot"`
	Shards      []struct {
		Shard    string `json:"shard"`
		Snapshot string `json:"snapshot"`
	} `json:"shards"`
}

func lastSummary(t *testing.T, stdout string) summary {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var s summary
		if json.Unmarshal([]byte(line), &s) == nil && s.MessageType == "summary" {
			return s
		}
	}
	t.Fatalf("no summary event in stdout:\n%s", stdout)
	return summary{}
}

func (e *testEnv) get(t *testing.T, url string) []byte {
	t.Helper()
	key := strings.TrimPrefix(url, "s3://"+e.bucket+"/")
	out, err := e.s3Client(e.vars["AWS_SECRET_ACCESS_KEY"]).GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", url, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *testEnv) readManifest(t *testing.T, url string) *manifest.Manifest {
	t.Helper()
	m, err := manifest.Decode(e.get(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkSnapshot downloads the snapshot and checks it with etcdutl, an
// independent reader, against the manifest.
func (e *testEnv) checkSnapshot(t *testing.T, m *manifest.Manifest) {
	t.Helper()
	data := e.get(t, "s3://"+e.bucket+"/"+m.Snapshot.Key)
	if int64(len(data)) != m.Snapshot.Size {
		t.Fatalf("snapshot has %d bytes, manifest says %d", len(data), m.Snapshot.Size)
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
		Hash      uint32
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("etcdutl output %q: %v", out, err)
	}
	if st.Revision != m.Etcd.Revision || st.TotalSize != m.Etcd.TotalSize || st.Version != m.Etcd.StorageVersion {
		t.Fatalf("etcdutl says revision %d, size %d, version %q; manifest (via %s) says %d, %d, %q",
			st.Revision, st.TotalSize, st.Version, m.Via, m.Etcd.Revision, m.Etcd.TotalSize, m.Etcd.StorageVersion)
	}
	// A streamed snapshot is read by hcpsnap itself, which does not count
	// keys or compute etcdutl's hash (they need every page in key order).
	if m.Via != "stream" && (st.TotalKey != m.Etcd.TotalKeys || st.Hash != m.Etcd.Hash) {
		t.Fatalf("etcdutl says %d keys, hash %d; manifest says %d, %d", st.TotalKey, st.Hash, m.Etcd.TotalKeys, m.Etcd.Hash)
	}
	if m.Via == "stream" && (m.Etcd.TotalKeys != 0 || m.Etcd.Hash != 0) {
		t.Fatalf("a streamed snapshot's manifest claims %d keys, hash %d, which hcpsnap cannot know", m.Etcd.TotalKeys, m.Etcd.Hash)
	}
	if st.TotalKey < 100 {
		t.Fatalf("snapshot holds only %d keys: the hosted etcd's data is missing", st.TotalKey)
	}
}

// checkKeyBundle compares the key bundle with the cluster's Secrets.
func (e *testEnv) checkKeyBundle(t *testing.T, m *manifest.Manifest) {
	t.Helper()
	if m.KeyBundle.Key == "" {
		t.Fatal("manifest has no key bundle key")
	}
	secrets, err := manifest.DecodeKeyBundle(e.get(t, "s3://"+e.bucket+"/"+m.KeyBundle.Key))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string][]byte{}
	for _, s := range secrets {
		got[s.Namespace+"/"+s.Name] = s.Data
	}
	hcp := e.namespace + "-" + e.cluster
	want := []string{e.namespace + "/" + e.cluster + "-etcd-encryption-key", hcp + "/root-ca", hcp + "/etcd-signer", hcp + "/sa-signing-key"}
	for _, name := range want {
		ns, n, _ := strings.Cut(name, "/")
		live, err := e.kube.CoreV1().Secrets(ns).Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !equalData(live.Data, got[name]) {
			t.Errorf("key bundle Secret %s differs from the cluster's", name)
		}
	}
	if len(got) != len(want) {
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Errorf("key bundle holds %v, want %v", keys, want)
	}
}

func (e *testEnv) checkNoPodFile(t *testing.T) {
	t.Helper()
	out, stderr, err := e.exec(context.Background(), "etcd-0", "sh", "-c", "ls -a /var/lib/data")
	if err != nil {
		t.Fatalf("ls in etcd-0: %v %s", err, stderr)
	}
	if strings.Contains(out, "hcpsnap-") {
		t.Fatalf("snapshot file left in the pod: %s", out)
	}
}

func (e *testEnv) checkNoMultipartUploads(t *testing.T) {
	t.Helper()
	out, err := e.s3Client(e.vars["AWS_SECRET_ACCESS_KEY"]).ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(e.bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 0 {
		t.Fatalf("%d unfinished multipart uploads left", len(out.Uploads))
	}
}

func (e *testEnv) listObjects(t *testing.T, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(e.s3Client(e.vars["AWS_SECRET_ACCESS_KEY"]), &s3.ListObjectsV2Input{Bucket: aws.String(e.bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	return keys
}

func (e *testEnv) deploymentVersions(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range []string{"kube-apiserver", "openshift-apiserver", "openshift-oauth-apiserver"} {
		dep, err := e.kube.AppsV1().Deployments(e.hcpNamespace).Get(context.Background(), d, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The generation moves with every spec change, a scale included, and
		// not with status updates.
		out[d] = strconv.FormatInt(dep.Generation, 10)
	}
	return out
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func equalData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(b[k], v) {
			return false
		}
	}
	return true
}

func equalPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func deref(p *string) string {
	if p == nil {
		return "<absent>"
	}
	return *p
}

// TestBackupRevisionFixedAtSnapshotSave: once snapshot-save has returned (and
// the API is on its way back while etcdctl still writes), a write to etcd is
// not in the backup: etcd fixed the snapshot's revision before its first byte.
func TestBackupRevisionFixedAtSnapshotSave(t *testing.T) {
	env := loadEnv(t)
	for _, via := range vias {
		t.Run("via "+via, func(t *testing.T) { revisionFixedAtSnapshotSave(t, env, via) })
	}
}

func revisionFixedAtSnapshotSave(t *testing.T, env *testEnv, via string) {
	var written int64
	env.backupWithFault(t, faultRun{
		prefix: "revision-" + via, args: []string{"--via", via},
		at: "snapshot-save done", match: stepDone("snapshot-save"),
		fault: func(t *testing.T) { written = env.putEtcdKey(t, "/hcpsnap-e2e/after-snapshot-save") },
		want:  []exitcode.Code{exitcode.OK},
		check: func(t *testing.T, r *running) {
			m := env.readManifest(t, lastSummary(t, r.stdout.String()).Manifest)
			env.checkSnapshot(t, m)
			if m.Etcd.Revision >= written {
				t.Errorf("the snapshot is at revision %d, which includes the write at revision %d made after snapshot-save", m.Etcd.Revision, written)
			}
		},
	})
}

// putEtcdKey writes key into the hosted etcd with etcdctl in etcd-0 and
// returns the revision of the write.
func (e *testEnv) putEtcdKey(t *testing.T, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := append(slices.Clone(runbookEtcdctl), "put", key, time.Now().String(), "-w", "json")
	out, errOut, err := e.exec(ctx, "etcd-0", put...)
	if err != nil {
		t.Fatalf("etcdctl put: %v: %s", err, errOut)
	}
	var resp struct {
		Header struct {
			Revision int64 `json:"revision"`
		} `json:"header"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Header.Revision == 0 {
		t.Fatalf("etcdctl put output %q: %v", out, err)
	}
	return resp.Header.Revision
}
