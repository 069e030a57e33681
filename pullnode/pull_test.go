package pullnode

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/hcpsnap/hcpsnap/manifest"
)

var complete = []string{"20260301T020000Z", "20260302T020000Z"}

// staticArchive is a small gzip-compressed tar, as cluster-backup.sh writes.
func staticArchive(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	body := []byte("apiVersion: v1\nkind: Pod\n")
	if err := tw.WriteHeader(&tar.Header{Name: "static-pod-resources/etcd-pod.yaml", Mode: 0o600, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func snapshotFixture(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/snapshot-v3.6.5-rev52.db")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// nodeFolder lays out a target folder as the snapshot script leaves it:
// two complete folders, one in progress, and junk beside them.
func nodeFolder(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	snap, tgz := snapshotFixture(t), staticArchive(t)
	for _, ts := range append(complete, "20260303T020000Z"+".partial") {
		dir := filepath.Join(root, ts)
		must(t, os.Mkdir(dir, 0o700))
		must(t, os.WriteFile(filepath.Join(dir, "snapshot_2026-03-01_020000.db"), snap, 0o600))
		must(t, os.WriteFile(filepath.Join(dir, "static_kuberesources_2026-03-01_020000.tar.gz"), tgz, 0o600))
	}
	must(t, os.WriteFile(filepath.Join(root, "notes.txt"), []byte("junk"), 0o600))
	must(t, os.Mkdir(filepath.Join(root, "old-stuff"), 0o700))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type harness struct {
	cluster *fake.Clientset
	store   *memStore
	exec    *nodeExec
	puller  *Puller
	results []Result
}

func newHarness(t *testing.T, root string, opts Options, objs ...runtime.Object) *harness {
	c := fakeCluster(objs...)
	h := &harness{store: newMemStore(), cluster: c}
	h.exec = &nodeExec{t: t, root: root, pod: func() string {
		names := podNames(t, c)
		if len(names) != 1 {
			return ""
		}
		return names[0]
	}}
	h.puller = &Puller{Kube: c, Exec: h.exec, Store: h.store, Opts: opts, poll: time.Millisecond,
		Emit: func(r Result) { h.results = append(h.results, r) }}
	return h
}

func (h *harness) summary() []string {
	var out []string
	for _, r := range h.results {
		out = append(out, r.Folder+" "+r.Result)
	}
	return out
}

func TestPullUploadsEachCompleteFolderOnce(t *testing.T) {
	root := nodeFolder(t)
	h := newHarness(t, root, testOptions(root))
	if err := h.puller.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"20260303T020000Z.partial skipped", "notes.txt skipped", "old-stuff skipped",
		complete[0] + " uploaded", complete[1] + " uploaded"}
	if got := h.summary(); !slices.Equal(got, want) {
		t.Errorf("results %q\nwant %q", got, want)
	}
	var wantKeys []string
	for _, ts := range complete {
		s, st, m := Keys("backups", ts)
		wantKeys = append(wantKeys, m, s, st)
	}
	slices.Sort(wantKeys)
	if got := h.store.keys(); !slices.Equal(got, wantKeys) {
		t.Errorf("bucket holds %q\nwant %q", got, wantKeys)
	}
	for _, c := range h.exec.cmds {
		if strings.Contains(strings.Join(c, " "), ".partial") {
			t.Errorf("the folder in progress was read: %q", c)
		}
	}
	if pods := podNames(t, h.cluster); len(pods) != 0 {
		t.Errorf("pods left: %q", pods)
	}

	snap, tgz := snapshotFixture(t), staticArchive(t)
	_, _, mk := Keys("backups", complete[1])
	m, err := manifest.Decode(h.store.objects[mk])
	if err != nil {
		t.Fatal(err)
	}
	fileSum, tgzSum := sha256.Sum256(snap), sha256.Sum256(tgz)
	snapKey, staticKey, _ := Keys("backups", complete[1])
	switch {
	case !m.IsManagement() || m.Node != "master-0" || m.Cluster != manifest.ManagementSeries:
		t.Errorf("manifest source %q node %q cluster %q", m.Source, m.Node, m.Cluster)
	case m.Etcd.Revision != 52 || m.Etcd.TotalSize <= 0:
		t.Errorf("etcd status %+v, want revision 52", m.Etcd)
	case m.Etcd.SHA256 != hex.EncodeToString(snap[len(snap)-32:]):
		t.Errorf("etcd sha256 %s, want the snapshot's trailing hash", m.Etcd.SHA256)
	case m.Snapshot != manifest.Object{Bucket: "bkt", Key: snapKey, Size: int64(len(snap)), SHA256: hex.EncodeToString(fileSum[:])}:
		t.Errorf("snapshot %+v", m.Snapshot)
	case m.StaticResources == nil || *m.StaticResources != manifest.Object{Bucket: "bkt", Key: staticKey, Size: int64(len(tgz)), SHA256: hex.EncodeToString(tgzSum[:])}:
		t.Errorf("static resources %+v", m.StaticResources)
	case m.Original == nil || m.Original.Snapshot != "snapshot_2026-03-01_020000.db" || m.Original.Folder != complete[1]:
		t.Errorf("original names %+v", m.Original)
	case !m.Times.Started.Equal(time.Date(2026, 3, 2, 2, 0, 0, 0, time.UTC)):
		t.Errorf("started %s, want the folder's time", m.Times.Started)
	case h.store.meta[snapKey][manifest.MetaRunID] != m.RunID || m.RunID == "":
		t.Errorf("snapshot object's run %q, manifest's %q", h.store.meta[snapKey][manifest.MetaRunID], m.RunID)
	}
	if !bytes.Equal(h.store.objects[snapKey], snap) || !bytes.Equal(h.store.objects[staticKey], tgz) {
		t.Error("stored objects differ from the node's files")
	}

	// A second run uploads nothing and reads no file.
	uploads, cats := len(h.store.uploads), h.exec.count("cat")
	h.results = nil
	if err := h.puller.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want = []string{"20260303T020000Z.partial skipped", "notes.txt skipped", "old-stuff skipped",
		complete[0] + " already-stored", complete[1] + " already-stored"}
	if got := h.summary(); !slices.Equal(got, want) {
		t.Errorf("second run %q\nwant %q", got, want)
	}
	if len(h.store.uploads) != uploads || h.exec.count("cat") != cats {
		t.Errorf("second run uploaded %d and read %d files", len(h.store.uploads)-uploads, h.exec.count("cat")-cats)
	}
}

// A snapshot or archive that is not whole fails the copy: the multipart
// upload is aborted, no manifest is written, and the pod goes.
func TestPullRefusesDamagedFiles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(dir string)
		aborted string
	}{
		{name: "a snapshot whose etcd hash does not match", aborted: manifest.SnapshotObject, damage: func(dir string) {
			p := filepath.Join(dir, "snapshot_2026-03-01_020000.db")
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 0xff
			os.WriteFile(p, data, 0o600)
		}},
		{name: "a truncated archive", aborted: manifest.StaticResourcesObject, damage: func(dir string) {
			p := filepath.Join(dir, "static_kuberesources_2026-03-01_020000.tar.gz")
			data, _ := os.ReadFile(p)
			os.WriteFile(p, data[:len(data)-10], 0o600)
		}},
		{name: "an archive that is not gzip", aborted: manifest.StaticResourcesObject, damage: func(dir string) {
			os.WriteFile(filepath.Join(dir, "static_kuberesources_2026-03-01_020000.tar.gz"), []byte("plain text, not an archive"), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := nodeFolder(t)
			tc.damage(filepath.Join(root, complete[0]))
			h := newHarness(t, root, testOptions(root))
			err := h.puller.Run(context.Background())
			if !errors.Is(err, ErrCopy) {
				t.Fatalf("err %v, want ErrCopy", err)
			}
			_, _, mk := Keys("backups", complete[0])
			if _, ok := h.store.objects[mk]; ok {
				t.Error("a manifest was written for a damaged folder")
			}
			if len(h.store.aborts) != 1 || !strings.HasSuffix(h.store.aborts[0], tc.aborted) || h.store.open != 0 {
				t.Errorf("aborted %q (open %d), want the %s", h.store.aborts, h.store.open, tc.aborted)
			}
			if _, ok := h.store.objects[strings.TrimSuffix(mk, manifest.ManifestObject)+tc.aborted]; ok {
				t.Errorf("the damaged %s is in the bucket", tc.aborted)
			}
			if got := h.summary(); got[len(got)-1] != complete[0]+" failed" {
				t.Errorf("results %q, want the folder failed last", got)
			}
			if pods := podNames(t, h.cluster); len(pods) != 0 {
				t.Errorf("pods left: %q", pods)
			}
		})
	}
}

// An exec stream that ends early is read on from where it stopped.
func TestPullReadsOnAfterACutStream(t *testing.T) {
	root := nodeFolder(t)
	h := newHarness(t, root, testOptions(root))
	h.puller.rangeSize = 8 << 10
	h.exec.cutAt, h.exec.cuts = 1000, 3
	if err := h.puller.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	snapKey, _, _ := Keys("backups", complete[0])
	if !bytes.Equal(h.store.objects[snapKey], snapshotFixture(t)) {
		t.Error("the stored snapshot differs from the node's")
	}
	// The first snapshot: cut at 1000, 2000 and 3000, then ranges from
	// 3000 in 8 KiB steps (3 execs); the second: 4 ranges; each archive: 1.
	if n := h.exec.count("cat"); n != 6+1+4+1 {
		t.Errorf("%d cat execs, want 12", n)
	}
}

// A stream that keeps ending without a byte fails after readAttempts.
func TestPullGivesUpOnAFileThatStopsShort(t *testing.T) {
	root := nodeFolder(t)
	h := newHarness(t, root, testOptions(root))
	// The listing says 24608 bytes; the file shrinks once it was listed,
	// so every exec from byte 20000 on ends cleanly without a byte.
	h.store.onUpload = func(key string) {
		if strings.HasSuffix(key, manifest.SnapshotObject) {
			os.Truncate(filepath.Join(root, complete[0], "snapshot_2026-03-01_020000.db"), 20000)
		}
	}
	err := h.puller.Run(context.Background())
	if !errors.Is(err, ErrCopy) || !strings.Contains(err.Error(), "times in a row") {
		t.Fatalf("err %v, want the stream given up after %d attempts", err, readAttempts)
	}
}

func TestPullNodeNotFound(t *testing.T) {
	root := nodeFolder(t)
	o := testOptions(root)
	o.Node = "master-9"
	h := newHarness(t, root, o)
	if err := h.puller.Run(context.Background()); !errors.Is(err, ErrNodeNotFound) {
		t.Fatalf("err %v, want ErrNodeNotFound", err)
	}
	for _, a := range h.cluster.Actions() {
		if a.GetVerb() == "create" {
			t.Errorf("created %s for a missing node", a.GetResource().Resource)
		}
	}
}

// Ctrl-C in the middle of a copy: the upload is aborted, the pod deleted
// under a context of its own, and the cancellation comes back.
func TestPullCancelled(t *testing.T) {
	root := nodeFolder(t)
	h := newHarness(t, root, testOptions(root))
	ctx, cancel := context.WithCancel(context.Background())
	h.exec.block = true
	h.store.onUpload = func(string) { time.AfterFunc(20*time.Millisecond, cancel) }
	err := h.puller.Run(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrCopy) {
		t.Fatalf("err %v, want context.Canceled alone", err)
	}
	if h.store.open != 0 || len(h.store.aborts) != 1 {
		t.Errorf("open uploads %d, aborted %q", h.store.open, h.store.aborts)
	}
	// Once before the upload, and again after it was cut short: a part the
	// server writes after Upload's own abort must not leave an upload.
	if n := len(h.store.abortCalls); n < 2 {
		t.Errorf("AbortUploads called %d times (%q), want before and after the upload", n, h.store.abortCalls)
	}
	if len(h.store.keys()) != 0 {
		t.Errorf("bucket holds %q", h.store.keys())
	}
	if pods := podNames(t, h.cluster); len(pods) != 0 {
		t.Errorf("pods left: %q", pods)
	}
}

// Pods of earlier runs: an ended one for this node is deleted, a running
// one is left (and warned about), another node's is not touched.
func TestPullStalePods(t *testing.T) {
	stale := func(name, node string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "hcpsnap",
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelNode: nodeLabel(node)},
			Annotations: map[string]string{AnnotationNode: node}}, Status: corev1.PodStatus{Phase: phase}}
	}
	root := nodeFolder(t)
	h := newHarness(t, root, testOptions(root),
		stale("ended", "master-0", corev1.PodFailed), stale("running", "master-0", corev1.PodRunning), stale("other", "master-1", corev1.PodSucceeded))
	// The exec goes to the new pod: the one that is neither stale pod.
	h.exec.pod = func() string {
		for _, n := range podNames(t, h.cluster) {
			if n != "running" && n != "other" && n != "ended" {
				return n
			}
		}
		return ""
	}
	if err := h.puller.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := podNames(t, h.cluster); !slices.Equal(got, []string{"other", "running"}) {
		t.Errorf("pods left %q, want other and running", got)
	}
}

// A complete folder without both files is reported and left.
func TestPullSkipsIncompleteFolder(t *testing.T) {
	root := nodeFolder(t)
	must(t, os.Remove(filepath.Join(root, complete[1], "static_kuberesources_2026-03-01_020000.tar.gz")))
	h := newHarness(t, root, testOptions(root))
	if err := h.puller.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := h.results[len(h.results)-1]
	if last.Result != ResultSkipped || !strings.Contains(last.Reason, "static_kuberesources") {
		t.Errorf("last result %+v, want skipped for the missing archive", last)
	}
	_, _, mk := Keys("backups", complete[1])
	if _, ok := h.store.objects[strings.TrimSuffix(mk, manifest.ManifestObject)+manifest.SnapshotObject]; ok {
		t.Error("the snapshot of an incomplete folder was uploaded")
	}
}
