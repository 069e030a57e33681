package steps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
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
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/kube"
	"github.com/hcpsnap/hcpsnap/s3"
)

// The cluster every fake describes.
const (
	testNS        = "clusters"
	testCluster   = "example"
	testHCPNS     = "clusters-example"
	testUID       = "uid-1"
	testInfraID   = "example-x7k2p"
	testBucket    = "hcpsnap-backups"
	activeKeyName = "example-etcd-encryption-key"
	backupKeyName = "example-etcd-encryption-key-previous"
	awsCredsName  = "example-aws-creds"
	// fakeAWSSecretKey sits in a Secret that is not part of the key bundle.
	fakeAWSSecretKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

// secretValues are the data of the fake Secrets, by name; tests assert where
// they may and may not appear.
var secretValues = map[string]string{
	activeKeyName:    "aes-active-key-value-0123456789abcdef",
	backupKeyName:    "aes-backup-key-value-fedcba9876543210",
	"root-ca":        "root-ca-private-key-value",
	"etcd-signer":    "etcd-signer-private-key-value",
	"sa-signing-key": "sa-signing-private-key-value",
	awsCredsName:     fakeAWSSecretKey,
}

// deploymentReplicas are the API Deployments and their original replicas;
// each count is distinct so that a mix-up shows.
var deploymentReplicas = map[string]int32{
	"kube-apiserver":            3,
	"openshift-apiserver":       2,
	"openshift-oauth-apiserver": 1,
}

var (
	deploymentsGVR = appsv1.SchemeGroupVersion.WithResource("deployments")
	podsGVR        = corev1.SchemeGroupVersion.WithResource("pods")
	hcGR           = hyperv1.GroupVersion.WithResource("hostedclusters").GroupResource()
	hcpGR          = hyperv1.GroupVersion.WithResource("hostedcontrolplanes").GroupResource()
)

// ---------------------------------------------------------------------------
// journal

// journal records, in order, every change any fake makes (and the exec
// commands), so that a test can assert the order of actions across the
// cluster, the pod and the bucket.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, fmt.Sprintf(format, args...))
}

func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

// ---------------------------------------------------------------------------
// HyperShift

// fakeHyperShift holds one HostedCluster and its HostedControlPlane in
// memory. Patches are JSON merge patches (RFC 7386), checked against the
// resourceVersion they carry, if any, and every change of spec.pausedUntil is mirrored into the
// HostedControlPlane as the HyperShift operator would.
type fakeHyperShift struct {
	mu  sync.Mutex
	j   *journal
	hc  *hyperv1.HostedCluster // nil: not found
	hcp *hyperv1.HostedControlPlane
	rv  int

	// patches are the merge patches of the spec, annotates those of the
	// run annotation, in order.
	patches   []string
	annotates []string
	conflicts int // Conflict errors still to return to patches with a resourceVersion
	// onGet, when set, runs under the lock on every GetHostedCluster with
	// the stored object, e.g. to let "another run" take the lock.
	onGet func(hc *hyperv1.HostedCluster)
	// beforeWrite runs before each patch or update is applied.
	beforeWrite func(what string)
	// fault may fail a write before or after it is applied.
	fault *faultPlan
	// shards are the HostedCluster's spec.etcd.managed.shards, which the
	// typed object cannot hold; shardsErr fails their read.
	shards    []kube.EtcdShard
	shardsErr error
}

var (
	_ HyperShift = (*fakeHyperShift)(nil)
	_ LockClient = (*fakeHyperShift)(nil)
)

func (f *fakeHyperShift) GetHostedCluster(_ context.Context, namespace, name string) (*hyperv1.HostedCluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hc == nil || f.hc.Namespace != namespace || f.hc.Name != name {
		return nil, apierrors.NewNotFound(hcGR, name)
	}
	if f.onGet != nil {
		f.onGet(f.hc)
	}
	return f.hc.DeepCopy(), nil
}

func (f *fakeHyperShift) GetEtcdShards(_ context.Context, namespace, name string) ([]kube.EtcdShard, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hc == nil || f.hc.Namespace != namespace || f.hc.Name != name {
		return nil, apierrors.NewNotFound(hcGR, name)
	}
	if f.shardsErr != nil {
		return nil, f.shardsErr
	}
	return append([]kube.EtcdShard(nil), f.shards...), nil
}

func (f *fakeHyperShift) PatchHostedCluster(_ context.Context, namespace, name string, patch []byte) (*hyperv1.HostedCluster, error) {
	if f.beforeWrite != nil {
		f.beforeWrite("patch " + string(patch))
	}
	idx, err := f.fault.before("patch hostedcluster " + string(patch))
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hc == nil || f.hc.Namespace != namespace || f.hc.Name != name {
		return nil, apierrors.NewNotFound(hcGR, name)
	}
	var p struct {
		Metadata *struct {
			ResourceVersion string          `json:"resourceVersion"`
			Annotations     json.RawMessage `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, apierrors.NewBadRequest("invalid merge patch: " + err.Error())
	}
	annotate := p.Metadata != nil && p.Metadata.Annotations != nil
	if p.Metadata != nil && p.Metadata.ResourceVersion != "" {
		// The apiserver's precondition: a patch naming a resourceVersion
		// applies only to that version.
		if f.conflicts > 0 {
			f.conflicts--
			return nil, apierrors.NewConflict(hcGR, name, errors.New("injected conflict"))
		}
		if p.Metadata.ResourceVersion != f.hc.ResourceVersion {
			return nil, apierrors.NewConflict(hcGR, name, fmt.Errorf("resourceVersion %s is stale, the object is at %s", p.Metadata.ResourceVersion, f.hc.ResourceVersion))
		}
	}
	if annotate {
		f.annotates = append(f.annotates, string(patch))
	} else {
		f.patches = append(f.patches, string(patch))
	}
	cur, err := json.Marshal(f.hc)
	if err != nil {
		return nil, err
	}
	var doc, pv any
	if err := json.Unmarshal(cur, &doc); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(patch, &pv); err != nil {
		return nil, apierrors.NewBadRequest("invalid merge patch: " + err.Error())
	}
	merged, err := json.Marshal(mergePatch(doc, pv))
	if err != nil {
		return nil, err
	}
	next := &hyperv1.HostedCluster{}
	if err := json.Unmarshal(merged, next); err != nil {
		return nil, err
	}
	f.store(next)
	if annotate {
		f.j.add("hostedcluster annotate")
	} else {
		f.j.add("hostedcluster pausedUntil=%s", describe(next.Spec.PausedUntil))
	}
	if err := f.fault.after(idx); err != nil {
		return nil, err
	}
	return next.DeepCopy(), nil
}

func (f *fakeHyperShift) GetHostedControlPlane(_ context.Context, namespace, name string) (*hyperv1.HostedControlPlane, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hcp == nil || f.hcp.Namespace != namespace || f.hcp.Name != name {
		return nil, apierrors.NewNotFound(hcpGR, name)
	}
	return f.hcp.DeepCopy(), nil
}

// store keeps hc as the new version and mirrors pausedUntil into the HCP.
func (f *fakeHyperShift) store(hc *hyperv1.HostedCluster) {
	f.rv++
	hc.ResourceVersion = fmt.Sprint(f.rv)
	f.hc = hc
	if f.hcp != nil {
		f.hcp.Spec.PausedUntil = nil
		if hc.Spec.PausedUntil != nil {
			f.hcp.Spec.PausedUntil = ptr.To(*hc.Spec.PausedUntil)
		}
	}
}

// current returns a copy of the stored HostedCluster.
func (f *fakeHyperShift) current() *hyperv1.HostedCluster {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hc.DeepCopy()
}

// writes returns the spec patches and the number of annotation patches.
func (f *fakeHyperShift) writes() (patches []string, annotates int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.patches), len(f.annotates)
}

// mergePatch applies an RFC 7386 JSON merge patch: objects merge
// recursively, null removes a member, anything else replaces.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

func clonePtr(v *string) *string {
	if v == nil {
		return nil
	}
	return ptr.To(*v)
}

func describe(v *string) string {
	if v == nil {
		return "<absent>"
	}
	return fmt.Sprintf("%q", *v)
}

// ---------------------------------------------------------------------------
// Executor

// execCall is one command run in a pod.
type execCall struct {
	Namespace, Pod, Container string
	Cmd                       []string
	Op                        string
}

// fakeExec plays the etcd container: it answers the commands the steps run
// and keeps the files etcdctl writes, so that a test can see the snapshot
// file appear and go.
type fakeExec struct {
	mu    sync.Mutex
	j     *journal
	calls []execCall
	files map[string][]byte
	// snapshot is what `etcdctl snapshot save` writes.
	snapshot []byte
	// stream, when set, turns the file into what `cat` streams.
	stream func(file []byte) []byte
	// fail makes an operation exit non-zero. A failing cat streams half the
	// file first, as a pod that dies mid-stream would.
	fail    map[string]error
	dbSize  int64
	availKB int64
	// onSave, when set, runs when etcdctl has written the snapshot.
	onSave func()
	// nextSnapshot, when set, gives each snapshot-save its own content;
	// revisionOf then tells snapshot status the revision of a file.
	nextSnapshot func() []byte
	revisionOf   func(data []byte) int64
	// fault may fail a command before it runs or after it succeeded.
	fault *faultPlan
	// etcdVersion is the version of etcdctl and etcdutl in the container
	// ("3.5.17" when empty); from 3.6 on, `etcdctl snapshot status` prints
	// its help and exits 0, as the real one does.
	etcdVersion string
	// noEtcdutl takes etcdutl out of the image; lacks takes out programs.
	noEtcdutl bool
	lacks     []string
	// apart are pods (etcd shard members) with files of their own: their
	// files are kept as "<pod>:<path>" and their journal entries say
	// "exec <op> in <pod>". Every other pod shares the default member's.
	apart map[string]bool
}

var _ Executor = (*fakeExec)(nil)

// execOp names a command the steps run.
func execOp(cmd []string) string {
	has := func(s string) bool { return slices.Contains(cmd, s) }
	switch {
	case len(cmd) == 0:
		return ""
	case cmd[0] == "df":
		return "df"
	case cmd[0] == "sh" && cmd[2] == toolsScript:
		return "tools"
	case cmd[0] == "sh" && cmd[2] == startSnapshotScript:
		return "snapshot-save"
	case cmd[0] == "sh" && cmd[2] == rangeScript:
		return "cat" // a range of the file
	case cmd[0] == "sh" && cmd[2] == probeSnapshotScript:
		return "probe"
	case cmd[0] == "sh" && cmd[2] == cleanupScript:
		return "rm"
	case cmd[0] == "cat":
		return "cat"
	case cmd[0] == "rm":
		return "rm"
	case has("endpoint") && has("status"):
		return "endpoint-status"
	case has("snapshot") && has("save"):
		return "snapshot-save"
	case has("snapshot") && has("status"):
		return "snapshot-status"
	}
	return strings.Join(cmd, " ")
}

func (f *fakeExec) Exec(ctx context.Context, namespace, pod, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	op := execOp(cmd)
	idx, err := f.fault.before("exec " + op)
	if err != nil {
		return err
	}
	if err := f.exec(ctx, op, namespace, pod, container, cmd, stdout, stderr); err != nil {
		return err
	}
	return f.fault.after(idx)
}

func (f *fakeExec) exec(ctx context.Context, op, namespace, pod, container string, cmd []string, stdout, stderr io.Writer) error {
	f.mu.Lock()
	f.calls = append(f.calls, execCall{namespace, pod, container, slices.Clone(cmd), op})
	failErr := f.fail[op]
	if f.fail[op+" in "+pod] != nil {
		failErr = f.fail[op+" in "+pod]
	}
	apart := f.apart[pod]
	f.mu.Unlock()
	if apart {
		f.j.add("exec %s in %s", op, pod)
		// The pod's own files: every path argument is moved to "<pod>:<path>".
		cmd = slices.Clone(cmd)
		for i, a := range cmd {
			if strings.HasPrefix(a, "/") && strings.HasSuffix(a, ".db") {
				cmd[i] = pod + ":" + a
			}
		}
	} else {
		f.j.add("exec %s", op)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if failErr != nil && op != "cat" {
		fmt.Fprintf(stderr, "Error: %v\n", failErr)
		return failErr
	}
	switch op {
	case "endpoint-status":
		fmt.Fprintf(stdout, `[{"Endpoint":"localhost:2379","Status":{"header":{"revision":456},"version":"3.5.17","dbSize":%d,"leader":1}}]`, f.dbSize)
	case "df":
		fmt.Fprintf(stdout, "Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/nvme1n1       8191416   191416 %9d       3%% /var/lib\n", f.availKB)
	case "snapshot-save":
		// The writer finishes at once: the file is complete, status 0.
		p := cmd[4]
		if !slices.Contains(cmd, "--cacert") || cmd[5] != "first-byte" && cmd[5] != "done" {
			return fmt.Errorf("unexpected snapshot-save command %q", cmd[4:])
		}
		if f.onSave != nil {
			f.onSave()
		}
		data := slices.Clone(f.snapshot)
		if f.nextSnapshot != nil {
			data = f.nextSnapshot()
		}
		f.mu.Lock()
		f.files[p] = data
		f.files[p+".rc"] = []byte("0\n")
		f.mu.Unlock()
	case "tools":
		// sh -c SCRIPT sh ETCDCTL ETCDUTL PROGRAM...
		var missing []string
		for _, p := range append([]string{cmd[4]}, cmd[6:]...) {
			if slices.Contains(f.lacks, p) {
				missing = append(missing, p)
			}
		}
		if len(missing) > 0 {
			fmt.Fprintf(stdout, "missing %s\n", strings.Join(missing, " "))
			return nil
		}
		utl := "yes"
		if f.noEtcdutl || cmd[5] != DefaultEtcdutl {
			utl = "no"
		}
		fmt.Fprintf(stdout, "etcdutl %s\netcdctl version: %s\n", utl, f.version())
	case "snapshot-status":
		data, ok := f.file(cmd[3])
		if !ok {
			return f.missing(stderr, cmd[3])
		}
		rev := int64(456)
		if f.revisionOf != nil {
			rev = f.revisionOf(data)
		}
		newer := strings.HasPrefix(f.version(), "3.6.")
		switch {
		case cmd[0] == DefaultEtcdutl && f.noEtcdutl:
			fmt.Fprintf(stderr, "sh: %s: not found\n", cmd[0])
			return &kube.ExitError{Pod: pod, Command: cmd, Code: 127}
		case cmd[0] == DefaultEtcdctl && newer:
			fmt.Fprint(stdout, "NAME:\n  snapshot - Manages etcd node snapshots\n\nCOMMANDS:\n  save\tStores an etcd node backend snapshot to a given file\n")
			return nil
		}
		if newer {
			// etcdutl 3.6 counts live keys and adds the storage version.
			fmt.Fprintf(stdout, `{"hash":2749163127,"revision":%d,"totalKey":321,"totalSize":%d,"version":"3.6.0"}`, rev, len(data))
		} else {
			if cmd[0] == DefaultEtcdctl {
				fmt.Fprintln(stderr, "Deprecated: Use `etcdutl snapshot status` instead.")
			}
			fmt.Fprintf(stdout, `{"hash":2749163127,"revision":%d,"totalKey":789,"totalSize":%d}`, rev, len(data))
		}
	case "probe":
		p := cmd[4]
		_, done := f.file(p + ".rc")
		data, ok := f.file(p)
		switch {
		case done && ok:
			fmt.Fprintf(stdout, "done 0 %d\n%s", len(data), odHex(data[len(data)-32:]))
		case done || !ok:
			fmt.Fprintln(stdout, "missing")
		default:
			fmt.Fprintln(stdout, "running")
		}
	case "cat":
		path, from, n := cmd[1], int64(0), int64(-1)
		if cmd[0] == "sh" {
			path = cmd[4]
			from, _ = strconv.ParseInt(cmd[5], 10, 64)
			n, _ = strconv.ParseInt(cmd[6], 10, 64)
		}
		data, ok := f.file(path)
		if !ok {
			return f.missing(stderr, path)
		}
		if f.stream != nil {
			data = f.stream(data)
		}
		data = data[min(from, int64(len(data))):]
		if n >= 0 {
			data = data[:min(n, int64(len(data)))]
		}
		if failErr != nil {
			data = data[:len(data)/2]
		}
		for len(data) > 0 {
			n := min(len(data), 4096)
			if _, err := stdout.Write(data[:n]); err != nil {
				return err
			}
			data = data[n:]
		}
		if failErr != nil {
			fmt.Fprintf(stderr, "error: %v\n", failErr)
			return failErr
		}
	case "rm":
		f.mu.Lock()
		p := cmd[4]
		for _, name := range []string{p, p + ".part", p + ".rc", p + ".log", p + ".pid"} {
			delete(f.files, name)
		}
		f.mu.Unlock()
	default:
		return fmt.Errorf("fake exec: unexpected command %q", cmd)
	}
	return nil
}

func (f *fakeExec) version() string {
	if f.etcdVersion == "" {
		return "3.5.17"
	}
	return f.etcdVersion
}

func (f *fakeExec) file(p string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, ok := f.files[p]
	return slices.Clone(data), ok
}

// fileNames returns the files in the pod.
func (f *fakeExec) fileNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for k := range f.files {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// putFile leaves a file in the pod.
func (f *fakeExec) putFile(p string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[p] = data
}

func (f *fakeExec) missing(stderr io.Writer, p string) error {
	fmt.Fprintf(stderr, "%s: No such file or directory\n", p)
	return errors.New("command terminated with exit code 1")
}

func (f *fakeExec) recorded() []execCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeExec) ops() []string {
	var ops []string
	for _, c := range f.recorded() {
		ops = append(ops, c.Op)
	}
	return ops
}

func (f *fakeExec) call(op string) (execCall, bool) {
	for _, c := range f.recorded() {
		if c.Op == op {
			return c, true
		}
	}
	return execCall{}, false
}

// odHex renders b as `od -An -v -tx1` does: 16 bytes a line.
func odHex(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		fmt.Fprintf(&sb, " %02x", c)
		if i%16 == 15 {
			sb.WriteByte('\n')
		}
	}
	return sb.String()
}

// makeSnapshot returns a synthetic etcd snapshot: n random bytes followed by
// their SHA-256, as etcd appends it to the bolt database.
func makeSnapshot(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	data := make([]byte, n, n+sha256.Size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(data)
	return append(data, sum[:]...)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ---------------------------------------------------------------------------
// Store

type storedObject struct {
	Data []byte
	Put  s3.PutOptions // for Put; Put.Metadata also holds an upload's metadata
}

// memStore is an in-memory bucket. Its Upload reads the stream to its end
// and, like a multipart upload, completes the object only when the whole
// stream was read without error; any read error aborts it.
type memStore struct {
	mu      sync.Mutex
	j       *journal
	objects map[string]storedObject
	calls   []string
	aborted []string
	// failOn makes a method (by name) fail.
	failOn map[string]error
	nextID int
	// fault may fail a call before or after it took effect.
	fault *faultPlan
}

var _ Store = (*memStore)(nil)

func newMemStore(j *journal) *memStore {
	return &memStore{j: j, objects: map[string]storedObject{}, failOn: map[string]error{}}
}

// newFailingStore returns a store whose method fails with err.
func newFailingStore(j *journal, method string, err error) *memStore {
	s := newMemStore(j)
	s.failOn[method] = err
	return s
}

func (s *memStore) record(method, key string) error {
	s.mu.Lock()
	s.calls = append(s.calls, method+" "+key)
	err := s.failOn[method]
	s.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = s.fault.before("store " + method + " " + key)
	return err
}

// done is the end of a call that took effect: a fault may still fail it,
// as a response lost on the way back does.
func (s *memStore) done(method, key string) error {
	return s.fault.afterLast("store " + method + " " + key)
}

func (s *memStore) CheckWritable(_ context.Context, prefix string) error {
	if err := s.record("CheckWritable", prefix); err != nil {
		return err
	}
	return s.done("CheckWritable", prefix)
}

func (s *memStore) Head(_ context.Context, key string) (s3.ObjectInfo, bool, error) {
	if err := s.record("Head", key); err != nil {
		return s3.ObjectInfo{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return s3.ObjectInfo{}, false, nil
	}
	return s3.ObjectInfo{Key: key, Size: int64(len(o.Data)), Metadata: o.Put.Metadata}, true, nil
}

func (s *memStore) Upload(ctx context.Context, key string, r io.Reader, opts s3.UploadOptions) (s3.UploadResult, error) {
	if err := s.record("Upload", key); err != nil {
		return s3.UploadResult{}, err
	}
	s.mu.Lock()
	s.nextID++
	id := fmt.Sprintf("upload-%d", s.nextID)
	s.mu.Unlock()
	if opts.OnCreate != nil {
		opts.OnCreate(id)
	}
	abort := func(err error) (s3.UploadResult, error) {
		s.mu.Lock()
		s.aborted = append(s.aborted, key)
		s.mu.Unlock()
		s.j.add("store abort %s", key)
		return s3.UploadResult{}, err
	}
	var data []byte
	part := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return abort(err)
		}
		n, err := io.ReadFull(r, part)
		data = append(data, part[:n]...)
		if n > 0 && opts.OnPart != nil {
			opts.OnPart(int64(len(data)))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return abort(err)
		}
	}
	s.mu.Lock()
	s.objects[key] = storedObject{Data: data, Put: s3.PutOptions{Metadata: opts.Metadata}}
	s.mu.Unlock()
	s.j.add("store upload %s", key)
	if err := s.done("Upload", key); err != nil {
		return s3.UploadResult{}, err
	}
	return s3.UploadResult{Size: int64(len(data)), ETag: `"etag"`}, nil
}

func (s *memStore) Put(_ context.Context, key string, data []byte, opts s3.PutOptions) error {
	if err := s.record("Put", key); err != nil {
		return err
	}
	s.mu.Lock()
	s.objects[key] = storedObject{Data: slices.Clone(data), Put: opts}
	s.mu.Unlock()
	s.j.add("store put %s", key)
	return s.done("Put", key)
}

func (s *memStore) Get(_ context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error) {
	if err := s.record("Get", key); err != nil {
		return nil, s3.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return nil, s3.ObjectInfo{}, fmt.Errorf("NoSuchKey: %s", key)
	}
	return io.NopCloser(bytes.NewReader(o.Data)), s3.ObjectInfo{Key: key, Size: int64(len(o.Data)), Metadata: o.Put.Metadata}, nil
}

func (s *memStore) GetRange(_ context.Context, key string, off, n int64) ([]byte, error) {
	if err := s.record("GetRange", key); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return nil, fmt.Errorf("NoSuchKey: %s", key)
	}
	if off < 0 || n <= 0 || off+n > int64(len(o.Data)) {
		return nil, fmt.Errorf("InvalidRange: %d+%d of %d bytes", off, n, len(o.Data))
	}
	return slices.Clone(o.Data[off : off+n]), s.done("GetRange", key)
}

func (s *memStore) AbortUploads(_ context.Context, key string) error {
	if err := s.record("AbortUploads", key); err != nil {
		return err
	}
	return s.done("AbortUploads", key)
}

func (s *memStore) object(key string) (storedObject, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	return o, ok
}

func (s *memStore) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.objects {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (s *memStore) allCalls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *memStore) abortedKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.aborted)
}

func (s *memStore) methodCalls(method string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.calls {
		if strings.HasPrefix(c, method+" ") {
			out = append(out, strings.TrimPrefix(c, method+" "))
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Saver and clock

// memSaver keeps every checkpoint saved, as JSON; failWhen can refuse one.
type memSaver struct {
	mu       sync.Mutex
	saves    [][]byte
	failWhen func(*checkpoint.Run) error
}

func (m *memSaver) Save(_ context.Context, run *checkpoint.Run) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWhen != nil {
		if err := m.failWhen(run); err != nil {
			return err
		}
	}
	data, err := json.Marshal(run)
	if err != nil {
		return err
	}
	m.saves = append(m.saves, data)
	return nil
}

// last returns the last saved checkpoint and its outputs.
func (m *memSaver) last(t *testing.T) (*checkpoint.Run, *Outputs) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.saves) == 0 {
		t.Fatal("nothing was saved")
	}
	run, err := checkpoint.Decode(m.saves[len(m.saves)-1])
	if err != nil {
		t.Fatal(err)
	}
	out, err := LoadOutputs(run)
	if err != nil {
		t.Fatal(err)
	}
	return run, out
}

// tickClock advances one second on every reading, so that every recorded
// time is distinct and ordered.
type tickClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *tickClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

var t0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// quietContext carries a logger that discards, so that test output shows
// only failures.
func quietContext() context.Context {
	return charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
}

// ---------------------------------------------------------------------------
// Kubernetes

// kubeObjects returns the hosted control plane namespace's objects: the API
// Deployments with their pods, the etcd member pod and the Secrets.
func kubeObjects() []runtime.Object {
	var objs []runtime.Object
	for _, name := range DefaultDeployments {
		n := deploymentReplicas[name]
		sel := map[string]string{"app": name}
		objs = append(objs, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testHCPNS, Generation: 1},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To(n),
				Selector: &metav1.LabelSelector{MatchLabels: sel},
			},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: n, ReadyReplicas: n, AvailableReplicas: n, UpdatedReplicas: n},
		})
		for i := range n {
			objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("%s-%d", name, i), Namespace: testHCPNS, Labels: sel}})
		}
	}
	objs = append(objs, etcdPod(true))
	for _, name := range []string{activeKeyName, backupKeyName, awsCredsName} {
		objs = append(objs, secret(testNS, name))
	}
	for _, name := range ControlPlaneSecrets {
		objs = append(objs, secret(testHCPNS, name))
	}
	return objs
}

func secret(ns, name string) *corev1.Secret {
	key := "key"
	if name == awsCredsName {
		key = "aws_secret_access_key"
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"fixture": "yes"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{key: []byte(secretValues[name])},
	}
}

// etcdPod returns the member etcd-0, Running and Ready; withCAMount says
// whether it mounts the OCP 4.12+ CA folder.
// shardPod is the first member of the etcd shard named shard.
func shardPod(shard string) *corev1.Pod {
	p := etcdPod(true)
	p.Name, p.Labels = ShardPod(shard), map[string]string{"app": "etcd-" + shard}
	return p
}

func etcdPod(withCAMount bool) *corev1.Pod {
	c := corev1.Container{Name: "etcd", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib"}}}
	if withCAMount {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "etcd-ca", MountPath: "/etc/etcd/tls/etcd-ca/"})
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd-0", Namespace: testHCPNS, Labels: map[string]string{"app": "etcd"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "ensure-dns"}, c}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// addScaleReactors gives the fake clientset the Deployment scale
// subresource, which its object tracker does not implement: get reads and
// update writes spec.replicas. An update also plays the Deployment
// controller: the status follows at once and the pods go at 0.
func addScaleReactors(cs *fake.Clientset, j *journal, beforeWrite func(string), fault func() *faultPlan) {
	tracker := cs.Tracker()
	cs.PrependReactor("get", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ga := a.(k8stesting.GetAction)
		if ga.GetSubresource() != "scale" {
			return false, nil, nil
		}
		obj, err := tracker.Get(deploymentsGVR, ga.GetNamespace(), ga.GetName())
		if err != nil {
			return true, nil, err
		}
		return true, scaleOf(obj.(*appsv1.Deployment)), nil
	})
	cs.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ua := a.(k8stesting.UpdateAction)
		if ua.GetSubresource() != "scale" {
			return false, nil, nil
		}
		sc := ua.GetObject().(*autoscalingv1.Scale)
		if beforeWrite != nil {
			beforeWrite(fmt.Sprintf("scale %s=%d", sc.Name, sc.Spec.Replicas))
		}
		idx, err := fault().before(fmt.Sprintf("scale %s=%d", sc.Name, sc.Spec.Replicas))
		if err != nil {
			return true, nil, err
		}
		obj, err := tracker.Get(deploymentsGVR, ua.GetNamespace(), sc.Name)
		if err != nil {
			return true, nil, err
		}
		d := obj.(*appsv1.Deployment).DeepCopy()
		n := sc.Spec.Replicas
		d.Spec.Replicas = ptr.To(n)
		d.Generation++
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, ReadyReplicas: n, AvailableReplicas: n, UpdatedReplicas: n}
		if err := tracker.Update(deploymentsGVR, d, d.Namespace); err != nil {
			return true, nil, err
		}
		if n == 0 {
			list, err := tracker.List(podsGVR, corev1.SchemeGroupVersion.WithKind("Pod"), d.Namespace)
			if err != nil {
				return true, nil, err
			}
			sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
			for _, p := range list.(*corev1.PodList).Items {
				if sel.Matches(labels.Set(p.Labels)) {
					if err := tracker.Delete(podsGVR, p.Namespace, p.Name); err != nil {
						return true, nil, err
					}
				}
			}
		}
		j.add("scale %s=%d", sc.Name, n)
		if err := fault().after(idx); err != nil {
			return true, nil, err
		}
		return true, scaleOf(d), nil
	})
}

// conflictOnce makes the first update of name's scale fail with a Conflict.
func conflictOnce(cs *fake.Clientset, name string) {
	var once sync.Once
	cs.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ua := a.(k8stesting.UpdateAction)
		if ua.GetSubresource() != "scale" || ua.GetObject().(*autoscalingv1.Scale).Name != name {
			return false, nil, nil
		}
		var err error
		once.Do(func() {
			err = apierrors.NewConflict(deploymentsGVR.GroupResource(), name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
		})
		return err != nil, nil, err
	})
}

func scaleOf(d *appsv1.Deployment) *autoscalingv1.Scale {
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace, ResourceVersion: d.ResourceVersion},
		Spec:       autoscalingv1.ScaleSpec{Replicas: ptr.Deref(d.Spec.Replicas, 1)},
		Status:     autoscalingv1.ScaleStatus{Replicas: d.Status.Replicas},
	}
}

// writeActions returns the create/update/patch/delete actions the
// clientset saw, as "verb resource/subresource name".
func writeActions(cs *fake.Clientset) []string {
	var out []string
	for _, a := range cs.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		res := a.GetResource().Resource
		if a.GetSubresource() != "" {
			res += "/" + a.GetSubresource()
		}
		out = append(out, a.GetVerb()+" "+res)
	}
	return out
}

// ---------------------------------------------------------------------------
// fixture

// fixture is a whole fake world: management cluster, HyperShift, the etcd
// pod and the bucket, sharing one journal.
type fixture struct {
	j        *journal
	kube     *fake.Clientset
	hs       *fakeHyperShift
	exec     *fakeExec
	etcd     *fakeEtcd
	store    *memStore
	saver    *memSaver
	clock    *tickClock
	snapshot []byte
	// beforeWrite, when set, runs before every cluster write.
	beforeWrite func(what string)
	// fault, when set, injects one failure (see faultPlan); the fakes
	// reach it through setFault.
	fault *faultPlan
}

// setFault gives every fake the fault plan.
func (fx *fixture) setFault(f *faultPlan) {
	fx.fault, fx.hs.fault, fx.exec.fault, fx.store.fault, fx.etcd.fault = f, f, f, f, f
}

// newFixture returns a healthy cluster whose HostedCluster has pausedUntil
// set to pausedUntil (nil: absent).
func newFixture(t *testing.T, pausedUntil *string) *fixture {
	t.Helper()
	fx := &fixture{j: &journal{}, saver: &memSaver{}, clock: &tickClock{t: t0}}
	fx.snapshot = makeSnapshot(uint64(len(t.Name())), 300<<10+17)
	fx.kube = fake.NewClientset(kubeObjects()...)
	before := func(what string) {
		if fx.beforeWrite != nil {
			fx.beforeWrite(what)
		}
	}
	addScaleReactors(fx.kube, fx.j, before, func() *faultPlan { return fx.fault })
	fx.hs = &fakeHyperShift{j: fx.j, rv: 1, beforeWrite: before,
		hc: &hyperv1.HostedCluster{
			ObjectMeta: metav1.ObjectMeta{Name: testCluster, Namespace: testNS, UID: testUID, ResourceVersion: "1"},
			Spec: hyperv1.HostedClusterSpec{
				InfraID:     testInfraID,
				PausedUntil: clonePtr(pausedUntil),
				Etcd:        hyperv1.EtcdSpec{ManagementType: hyperv1.Managed},
				SecretEncryption: &hyperv1.SecretEncryptionSpec{Type: hyperv1.AESCBC, AESCBC: &hyperv1.AESCBCSpec{
					ActiveKey: corev1.LocalObjectReference{Name: activeKeyName},
					BackupKey: &corev1.LocalObjectReference{Name: backupKeyName},
				}},
			},
			Status: hyperv1.HostedClusterStatus{Version: &hyperv1.ClusterVersionStatus{
				Desired: configv1.Release{Version: "4.17.3"},
				History: []configv1.UpdateHistory{{State: configv1.PartialUpdate, Version: "4.17.3"}, {State: configv1.CompletedUpdate, Version: "4.17.2"}},
			}},
		},
		hcp: &hyperv1.HostedControlPlane{
			ObjectMeta: metav1.ObjectMeta{Name: testCluster, Namespace: testHCPNS},
			Spec:       hyperv1.HostedControlPlaneSpec{PausedUntil: clonePtr(pausedUntil)},
		},
	}
	fx.exec = &fakeExec{j: fx.j, files: map[string][]byte{}, snapshot: fx.snapshot, fail: map[string]error{},
		dbSize: int64(len(fx.snapshot)), availKB: 8 << 20}
	fx.etcd = &fakeEtcd{j: fx.j, snapshot: boltSnapshot(t, snapshotTestdataRev), dbSize: snapshotTestdataSize}
	fx.store = newMemStore(fx.j)
	return fx
}

func defaultOptions() Options {
	return Options{
		Cluster: testCluster, Namespace: testNS,
		Bucket: testBucket, Prefix: "backups", KeyPrefix: "hcpsnap-keys",
		Member: "etcd-0", Container: "etcd",
		Deployments:  slices.Clone(DefaultDeployments),
		PauseTimeout: 30 * time.Minute,
		WaitTimeout:  10 * time.Second,
		Etcd: EtcdOptions{Etcdctl: DefaultEtcdctl, Etcdutl: DefaultEtcdutl, Endpoint: DefaultEndpoint, Cert: DefaultClientCert,
			Key: DefaultClientKey, SnapshotDir: DefaultSnapshotDir},
	}
}

// state returns a fresh run of the backup workflow against the fixture.
func (fx *fixture) state(opts Options) *State {
	e := Engine{Steps: Backup()}
	run := checkpoint.New("backup", checkpoint.Cluster{Namespace: testNS, Name: testCluster, UID: testUID}, "test-host", e.Names(), t0)
	return &State{
		Opts:    opts,
		Clients: Clients{Kube: fx.kube, HyperShift: fx.hs, Exec: fx.exec, Etcd: fx.etcd, Store: fx.store},
		Run:     run,
		Out:     &Outputs{},
		Saver:   fx.saver,
		Now:     fx.clock.Now,
	}
}

// execute runs the whole backup workflow.
func (fx *fixture) execute(s *State) error {
	e := Engine{Steps: Backup(), UndoTimeout: 20 * time.Second, Retakes: s.Opts.SnapshotRetries}
	return e.Execute(quietContext(), s)
}

// replicas returns the Deployments' current spec.replicas.
func (fx *fixture) replicas(t *testing.T) map[string]int32 {
	t.Helper()
	got := map[string]int32{}
	for _, name := range DefaultDeployments {
		obj, err := fx.kube.Tracker().Get(deploymentsGVR, testHCPNS, name)
		if err != nil {
			t.Fatal(err)
		}
		got[name] = ptr.Deref(obj.(*appsv1.Deployment).Spec.Replicas, -1)
	}
	return got
}

// statuses returns every step's status.
func statuses(run *checkpoint.Run) map[string]checkpoint.Status {
	m := map[string]checkpoint.Status{}
	for _, r := range run.Steps {
		m[r.Name] = r.Status
	}
	return m
}
