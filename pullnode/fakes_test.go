package pullnode

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/s3"
)

// memStore is an in-memory bucket with multipart uploads that read their
// stream to the end and are aborted on any error, as s3.Store's are.
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	meta    map[string]map[string]string
	// open counts multipart uploads begun and neither completed nor aborted.
	open    int
	uploads []string
	aborts  []string
	// abortCalls are the keys of AbortUploads calls, in order.
	abortCalls []string
	// onUpload, when set, runs before an upload reads its stream.
	onUpload func(key string)
}

func newMemStore() *memStore {
	return &memStore{objects: map[string][]byte{}, meta: map[string]map[string]string{}}
}

func (m *memStore) Head(_ context.Context, key string) (s3.ObjectInfo, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.objects[key]
	return s3.ObjectInfo{Key: key, Size: int64(len(d)), Metadata: m.meta[key]}, ok, nil
}

func (m *memStore) GetRange(_ context.Context, key string, off, n int64) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.objects[key]
	if !ok || off+n > int64(len(d)) {
		return nil, fmt.Errorf("get %s [%d,+%d): out of range", key, off, n)
	}
	return append([]byte(nil), d[off:off+n]...), nil
}

func (m *memStore) Put(_ context.Context, key string, data []byte, _ s3.PutOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objects[key] = append([]byte(nil), data...)
	return nil
}

func (m *memStore) Upload(ctx context.Context, key string, r io.Reader, opts s3.UploadOptions) (s3.UploadResult, error) {
	m.mu.Lock()
	m.open++
	m.uploads = append(m.uploads, key)
	hook := m.onUpload
	m.mu.Unlock()
	if hook != nil {
		hook(key)
	}
	data, err := io.ReadAll(r)
	if err == nil {
		err = ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open--
	if err != nil {
		m.aborts = append(m.aborts, key)
		return s3.UploadResult{}, err
	}
	m.objects[key] = data
	m.meta[key] = opts.Metadata
	return s3.UploadResult{Size: int64(len(data))}, nil
}

func (m *memStore) AbortUploads(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.abortCalls = append(m.abortCalls, key)
	return nil
}

func (m *memStore) keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ks []string
	for k := range m.objects {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

var _ Store = (*memStore)(nil)

// nodeExec serves `node-files` execs from a local folder that stands for
// the node's target folder, as hcpsnap in the pod would, and records them.
type nodeExec struct {
	t    *testing.T
	root string
	// pod is the pod execs must go to; set once the pod exists.
	pod func() string

	mu    sync.Mutex
	cmds  [][]string
	cutAt int64 // when > 0, each cat stream ends (cleanly) after so many bytes
	cuts  int   // how many cats are still cut
	// block, when set, blocks each cat until ctx ends.
	block bool
}

func (e *nodeExec) Exec(ctx context.Context, namespace, pod, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	e.mu.Lock()
	e.cmds = append(e.cmds, cmd)
	cut := e.cuts > 0 && e.cutAt > 0 && len(cmd) > 2 && cmd[2] == "cat"
	if cut {
		e.cuts--
	}
	e.mu.Unlock()
	if want := e.pod(); pod != want || namespace != "hcpsnap" || container != Container {
		return fmt.Errorf("exec in %s/%s/%s, want hcpsnap/%s/%s", namespace, pod, container, want, Container)
	}
	if len(cmd) < 3 || cmd[0] != Binary || cmd[1] != NodeFilesCommand {
		return fmt.Errorf("unexpected command %q", cmd)
	}
	local := func(p string) string { return e.root + strings.TrimPrefix(p, MountPath) }
	switch cmd[2] {
	case "list":
		l, err := List(local(cmd[3]))
		if err != nil {
			return err
		}
		return jsonEncode(stdout, l)
	case "cat":
		if e.block {
			<-ctx.Done()
			return ctx.Err()
		}
		var off, n int64
		fmt.Sscan(cmd[4], &off)
		fmt.Sscan(cmd[5], &n)
		if !strings.HasPrefix(cmd[3], MountPath+"/") {
			return &kube.ExitError{Pod: pod, Command: cmd, Code: 1}
		}
		var buf bytes.Buffer
		if err := Cat(&buf, e.root, local(cmd[3]), off, n); err != nil {
			fmt.Fprintln(stderr, err)
			return &kube.ExitError{Pod: pod, Command: cmd, Code: 1}
		}
		data := buf.Bytes()
		if cut && int64(len(data)) > e.cutAt {
			data = data[:e.cutAt]
		}
		_, err := stdout.Write(data)
		return err
	}
	return fmt.Errorf("unexpected command %q", cmd)
}

func (e *nodeExec) count(verb string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.cmds {
		if c[2] == verb {
			n++
		}
	}
	return n
}

// fakeCluster is a fake clientset with the node and a kubelet that starts
// every created pod at once (and names it, as generateName would), and
// deletes pods at once.
func fakeCluster(objs ...runtime.Object) *fake.Clientset {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "master-0"}}
	c := fake.NewClientset(append([]runtime.Object{node}, objs...)...)
	n := 0
	c.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		if pod.Name == "" {
			n++
			pod.Name = fmt.Sprintf("%s%d", pod.GenerateName, n)
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: Container, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		return false, pod, nil
	})
	return c
}

// podNames lists the pods in the namespace.
func podNames(t *testing.T, c *fake.Clientset) []string {
	t.Helper()
	pods, err := c.CoreV1().Pods("hcpsnap").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	return names
}

func testOptions(root string) Options {
	return Options{Node: "master-0", TargetDir: "/home/core/etcd-snapshots", Image: "quay.io/hcpsnap/hcpsnap@sha256:" + strings.Repeat("a", 64),
		PodNamespace: "hcpsnap", Bucket: "bkt", Prefix: "backups", PodDeadline: time.Hour, WaitTimeout: 5 * time.Second, CleanupTimeout: 5 * time.Second}
}
