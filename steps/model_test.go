package steps

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// faultMode is how an injected failure behaves.
type faultMode int

const (
	// errBefore fails the operation before it takes effect.
	errBefore faultMode = iota
	// errAfter lets the operation take effect, then fails it (a response
	// lost on its way back).
	errAfter
	// cancelBefore interrupts the run (Ctrl-C) just before the operation,
	// which then fails as a client does with a cancelled context.
	cancelBefore
	// cancelAfter interrupts the run just after the operation took effect.
	cancelAfter
	// saveBroken makes this checkpoint save and every later one of the run
	// fail (a full state folder, a refused write of the lock).
	saveBroken
)

func (m faultMode) String() string {
	return [...]string{"error before", "error after", "interrupt before", "interrupt after", "saves fail from"}[m]
}

var errInjected = errors.New("injected fault")

// faultPlan counts the operations of a run that can fail — cluster writes,
// commands in the pod, store calls and checkpoint saves — and fails the
// one at index at, as mode says. A nil plan counts nothing.
type faultPlan struct {
	mu      sync.Mutex
	armed   bool
	n       int
	at      int
	mode    faultMode
	cancel  context.CancelFunc
	ops     []string
	last    map[string]int
	broken  bool
	tripped string
}

// before is called as an operation starts; it returns the operation's
// index for after.
func (f *faultPlan) before(what string) (int, error) {
	if f == nil {
		return -1, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed {
		return -1, nil
	}
	idx := f.n
	f.n++
	f.ops = append(f.ops, what)
	if f.last == nil {
		f.last = map[string]int{}
	}
	f.last[what] = idx
	if f.broken && strings.HasPrefix(what, "save") {
		return idx, errInjected
	}
	if idx != f.at {
		return idx, nil
	}
	f.tripped = what
	switch f.mode {
	case errBefore:
		return idx, errInjected
	case cancelBefore:
		f.cancel()
		return idx, context.Canceled
	case saveBroken:
		if strings.HasPrefix(what, "save") {
			f.broken = true
			return idx, errInjected
		}
	}
	return idx, nil
}

// after is called once an operation took effect.
func (f *faultPlan) after(idx int) error {
	if f == nil || idx < 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed || idx != f.at {
		return nil
	}
	switch f.mode {
	case errAfter:
		return errInjected
	case cancelAfter:
		f.cancel()
	}
	return nil
}

// afterLast is after for the latest operation named what.
func (f *faultPlan) afterLast(what string) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	idx, ok := f.last[what]
	f.mu.Unlock()
	if !ok {
		return nil
	}
	return f.after(idx)
}

func (f *faultPlan) disarm() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed, f.broken = false, false
}

// faultSaver is the real ClusterSaver (run file and HostedCluster
// annotation) behind the fault plan.
type faultSaver struct {
	next  *ClusterSaver
	fault *faultPlan
}

func (f *faultSaver) Save(ctx context.Context, run *checkpoint.Run) error {
	idx, err := f.fault.before(fmt.Sprintf("save %d", run.Serial))
	if err != nil {
		return err
	}
	if err := f.next.Save(ctx, run); err != nil {
		return err
	}
	return f.fault.after(idx)
}

// model is one backup, its failure and its resumption, on the fakes.
type model struct {
	fx    *fixture
	dir   string
	opts  Options
	plan  *faultPlan
	saves int // snapshot-save commands seen
	// apiUp lists the snapshot-save commands run while the API was up.
	apiUp []string
	// revisions gives each snapshot's revision, by its etcd SHA-256.
	revisions map[string]int64
}

func newModel(t *testing.T, pausedUntil *string, opts Options) *model {
	m := &model{fx: newFixture(t, pausedUntil), dir: stateDir(t), opts: opts, plan: &faultPlan{}, revisions: map[string]int64{}}
	m.fx.setFault(m.plan)
	m.fx.exec.nextSnapshot = func() []byte {
		m.saves++
		data := makeSnapshot(uint64(1000+m.saves), 200<<10+m.saves)
		m.revisions[hex.EncodeToString(data[len(data)-32:])] = int64(1000 + m.saves)
		return data
	}
	m.fx.exec.revisionOf = func(data []byte) int64 { return m.revisions[hex.EncodeToString(data[len(data)-32:])] }
	m.fx.exec.onSave = func() {
		if m.opts.Online {
			return
		}
		if why := m.apiServing(t); why != "" {
			m.apiUp = append(m.apiUp, why)
		}
	}
	m.fx.etcd.nextSnapshot = func() []byte {
		m.saves++
		data := boltSnapshot(t, int64(1000+m.saves))
		m.revisions[hex.EncodeToString(data[len(data)-32:])] = int64(1000 + m.saves)
		return data
	}
	m.fx.etcd.onSnapshot = m.fx.exec.onSave
	return m
}

// apiServing says why the API is up or reconciliation runs, or "".
func (m *model) apiServing(t *testing.T) string {
	for name, n := range m.fx.replicas(t) {
		if n != 0 {
			return fmt.Sprintf("Deployment %s has %d replicas", name, n)
		}
	}
	hc := m.fx.hs.current()
	if hc.Spec.PausedUntil == nil {
		return "reconciliation is not paused"
	}
	if _, err := time.Parse(time.RFC3339, *hc.Spec.PausedUntil); err != nil {
		return fmt.Sprintf("pausedUntil is %q, not hcpsnap's deadline", *hc.Spec.PausedUntil)
	}
	return ""
}

// run performs one backup as internal/command does: a new run, or with
// resume the run recorded on the cluster or in the state folder, then the
// release of the lock unless a change is left for manual action.
func (m *model) run(t *testing.T, resume bool, arm func(cancel context.CancelFunc)) error {
	t.Helper()
	ctx, cancel := context.WithCancel(quietContext())
	defer cancel()
	saver := &ClusterSaver{Dir: m.dir, Client: m.fx.hs}
	s := m.fx.state(m.opts)
	s.Saver = &faultSaver{next: saver, fault: m.plan}
	cluster := checkpoint.Cluster{Namespace: testNS, Name: testCluster, UID: testUID}
	if resume {
		run := m.loadRun(t, cluster)
		if run == nil {
			return errNoRun
		}
		out, err := LoadOutputs(run)
		if err != nil {
			t.Fatal(err)
		}
		var opts Options
		if err := json.Unmarshal(run.Options, &opts); err != nil {
			t.Fatal(err)
		}
		s.Run, s.Out, s.Opts = run, out, opts
	} else {
		data, err := json.Marshal(m.opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Run.Options = data
	}
	// A streamed snapshot waits after its first chunk until the run waits
	// for it, so that its operations keep one order across runs.
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	defer open()
	m.fx.etcd.gate = gate
	s.Events = func(e Event) {
		if e.MessageType == "step_started" && (e.Step == StepUpload || e.Step == StepSnapshotSave && s.Opts.HoldAPIUntilSaved) {
			open()
		}
	}
	if arm != nil {
		arm(cancel)
	}
	e := Engine{Steps: Backup(), UndoTimeout: 5 * time.Second, Retakes: s.Opts.SnapshotRetries}
	err := e.Execute(ctx, s)
	m.plan.disarm()
	if _, open := m.fx.etcd.streams(); open != 0 {
		t.Errorf("%d snapshot streams left open after the run (%v)", open, err)
	}
	if exitcode.Of(err) != exitcode.ManualAction {
		if rerr := saver.Release(context.Background(), s.Run); rerr != nil {
			t.Fatalf("release: %v", rerr)
		}
	}
	return err
}

// loadRun picks the run to resume as internal/command's loadRun does.
func (m *model) loadRun(t *testing.T, cluster checkpoint.Cluster) *checkpoint.Run {
	t.Helper()
	held, err := Holder(m.fx.hs.current())
	if err != nil {
		t.Fatal(err)
	}
	local, err := checkpoint.Latest(m.dir, cluster)
	if err != nil {
		t.Fatal(err)
	}
	run := held
	if run == nil || run.Finished || (local != nil && local.RunID == run.RunID && local.Serial > run.Serial) {
		run = local
	}
	return run
}

// errNoRun is what --resume finds when no run is left unfinished.
var errNoRun = errors.New("no unfinished run to resume")

// checkClusterAsItWas asserts the replicas, pausedUntil and lock are back.
func (m *model) checkClusterAsItWas(t *testing.T, pausedUntil *string) {
	t.Helper()
	if got := m.fx.replicas(t); !mapsEqual(got, deploymentReplicas) {
		t.Errorf("replicas %v, want %v", got, deploymentReplicas)
	}
	hc := m.fx.hs.current()
	if describe(hc.Spec.PausedUntil) != describe(pausedUntil) {
		t.Errorf("pausedUntil %s, want %s", describe(hc.Spec.PausedUntil), describe(pausedUntil))
	}
	if _, ok := hc.Annotations[RunAnnotation]; ok {
		t.Errorf("the run annotation is left on the HostedCluster")
	}
}

// checkBackup asserts the bucket holds exactly one manifest, which
// describes exactly the object it names, and that the pod is clean.
func (m *model) checkBackup(t *testing.T) {
	t.Helper()
	var manifests []string
	for _, k := range m.fx.store.keys() {
		if strings.HasSuffix(k, "/"+manifestObjectName) {
			manifests = append(manifests, k)
		}
	}
	if len(manifests) != 1 {
		t.Fatalf("%d manifests in the bucket, want 1: %v", len(manifests), m.fx.store.keys())
	}
	obj, _ := m.fx.store.object(manifests[0])
	var man manifest.Manifest
	if err := json.Unmarshal(obj.Data, &man); err != nil {
		t.Fatal(err)
	}
	snap, ok := m.fx.store.object(man.Snapshot.Key)
	if !ok {
		t.Fatalf("the manifest names %s, which is not in the bucket", man.Snapshot.Key)
	}
	etcdSum := hex.EncodeToString(snap.Data[len(snap.Data)-32:])
	want := m.revisions[etcdSum]
	switch {
	case man.Snapshot.Size != int64(len(snap.Data)):
		t.Errorf("manifest size %d, object %d bytes", man.Snapshot.Size, len(snap.Data))
	case man.Snapshot.SHA256 != sha256Hex(snap.Data):
		t.Errorf("manifest sha256 %s, object's %s", man.Snapshot.SHA256, sha256Hex(snap.Data))
	case man.Etcd.SHA256 != etcdSum:
		t.Errorf("manifest etcd sha256 %s, object's %s", man.Etcd.SHA256, etcdSum)
	case want == 0 || man.Etcd.Revision != want:
		t.Errorf("manifest revision %d, the object's snapshot has %d", man.Etcd.Revision, want)
	case snap.Put.Metadata[manifest.MetaRunID] != man.RunID:
		t.Errorf("object of run %q, manifest of run %s", snap.Put.Metadata[manifest.MetaRunID], man.RunID)
	}
	for _, f := range m.fx.exec.fileNames() {
		if strings.HasPrefix(f, DefaultSnapshotDir+"/hcpsnap-") {
			t.Errorf("file %s left in the pod", f)
		}
	}
}

// stateDir is a state folder in memory when the machine has one: the model
// writes a few thousand run files, each synced to disk.
func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "hcpsnap-model-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func mapsEqual(a, b map[string]int32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestModelEveryFailurePoint drives the real backup workflow on the fakes
// through every operation that can fail — each cluster write, each command
// in the pod, each store call and each checkpoint save, so each step before
// and after its change — with an error, an interrupt or the saves breaking
// there, then resumes the run from its checkpoint as `backup --resume`
// does. It asserts the invariants: the first run exits with a documented
// code and leaves the cluster as it was unless it asks for manual action;
// after the resume the cluster is as it was, the lock is gone, the bucket
// holds one manifest that describes exactly the object it names, and every
// offline snapshot was taken while the API was down.
func TestModelEveryFailurePoint(t *testing.T) {
	variants := []struct {
		name        string
		pausedUntil *string
		opts        func(*Options)
	}{
		{name: "offline", opts: func(*Options) {}},
		{name: "offline, pausedUntil set", pausedUntil: ptr.To("2031-01-02T03:04:05Z"), opts: func(*Options) {}},
		{name: "hold API until saved", opts: func(o *Options) { o.HoldAPIUntilSaved = true }},
		{name: "online", opts: func(o *Options) { o.Online = true }},
		{name: "stream offline", opts: func(o *Options) { o.Via, o.SnapshotRetries = ViaStream, 2 }},
		{name: "stream, hold API until saved", opts: func(o *Options) { o.Via, o.SnapshotRetries, o.HoldAPIUntilSaved = ViaStream, 2, true }},
		{name: "stream online", opts: func(o *Options) { o.Via, o.SnapshotRetries, o.Online = ViaStream, 2, true }},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			opts := defaultOptions()
			v.opts(&opts)
			// A clean run counts the operations and proves the baseline.
			clean := newModel(t, v.pausedUntil, opts)
			if err := clean.run(t, false, func(context.CancelFunc) { clean.plan.armed, clean.plan.at = true, -1 }); err != nil {
				t.Fatalf("clean run: %v", err)
			}
			clean.checkClusterAsItWas(t, v.pausedUntil)
			clean.checkBackup(t)
			ops := clean.plan.ops
			if len(ops) < 20 {
				t.Fatalf("only %d failure points: the fakes are not instrumented", len(ops))
			}
			codes := map[exitcode.Code]int{}
			for at := range ops {
				for _, mode := range []faultMode{errBefore, errAfter, cancelBefore, cancelAfter, saveBroken} {
					if mode == saveBroken && !strings.HasPrefix(ops[at], "save") {
						continue
					}
					name := fmt.Sprintf("%s at %d %s", mode, at, ops[at])
					t.Run(name, func(t *testing.T) {
						m := newModel(t, v.pausedUntil, opts)
						err := m.run(t, false, func(cancel context.CancelFunc) {
							m.plan.armed, m.plan.at, m.plan.mode, m.plan.cancel = true, at, mode, cancel
						})
						code := exitcode.Of(err)
						codes[code]++
						switch code {
						case exitcode.OK:
							// The fault changed nothing the run relied on.
							m.checkClusterAsItWas(t, v.pausedUntil)
							m.checkBackup(t)
							return
						case exitcode.Precondition, exitcode.Restored, exitcode.Interrupted:
							m.checkClusterAsItWas(t, v.pausedUntil)
						case exitcode.ManualAction:
							if !strings.Contains(err.Error(), "--resume") {
								t.Errorf("exit 5 without saying how to finish: %v", err)
							}
							if mode == saveBroken {
								// No record could be written, but the undo ran:
								// the API is back before the run ends.
								if got := m.fx.replicas(t); !mapsEqual(got, deploymentReplicas) {
									t.Errorf("saves broken: replicas %v after the run, want %v", got, deploymentReplicas)
								}
								if got := m.fx.hs.current().Spec.PausedUntil; describe(got) != describe(v.pausedUntil) {
									t.Errorf("saves broken: pausedUntil %s after the run, want %s", describe(got), describe(v.pausedUntil))
								}
							}
						default:
							t.Fatalf("exit code %d is not one a failed backup documents: %v", code, err)
						}
						if msg := err.Error(); !strings.Contains(msg, errInjected.Error()) && !strings.Contains(msg, context.Canceled.Error()) {
							t.Errorf("the error does not name the fault: %v", err)
						}
						err = m.run(t, true, nil)
						if errors.Is(err, errNoRun) {
							if m.fx.store.keys() == nil {
								// Nothing was recorded, so nothing was changed:
								// the user starts a new backup.
								if code != exitcode.Precondition && code != exitcode.Interrupted {
									t.Fatalf("no run recorded after exit %d", code)
								}
								err = m.run(t, false, nil)
							} else {
								// The last save took effect although it failed:
								// the run is complete and recorded as finished.
								if held, _ := Holder(m.fx.hs.current()); held != nil && !held.Finished {
									t.Fatalf("an unfinished run holds the lock, but --resume finds none")
								}
								m.checkBackup(t)
								return
							}
						}
						if err != nil {
							t.Fatalf("resume after %v: %v", code, err)
						}
						m.checkClusterAsItWas(t, v.pausedUntil)
						m.checkBackup(t)
						if len(m.apiUp) > 0 {
							t.Errorf("an offline snapshot was taken while the API served: %v", m.apiUp)
						}
					})
				}
			}
			t.Logf("%d failure points; first-run exit codes %v", len(ops), codes)
		})
	}
}

// TestModelKeepsTheUploadedSnapshot pins hole (1) of the resume: a failure
// after the upload keeps the uploaded object as the backup's, so the resume
// takes no new snapshot and the manifest names that object.
func TestModelKeepsTheUploadedSnapshot(t *testing.T) {
	for _, failIn := range []string{StepSaveKeys, StepWriteManifest} {
		t.Run(failIn, func(t *testing.T) {
			clean := newModel(t, nil, defaultOptions())
			if err := clean.run(t, false, func(context.CancelFunc) { clean.plan.armed, clean.plan.at = true, -1 }); err != nil {
				t.Fatal(err)
			}
			op := "store Put hcpsnap-keys/"
			if failIn == StepWriteManifest {
				op = "store Put backups/"
			}
			// Fail that store call in a fresh world.
			at := slices.IndexFunc(clean.plan.ops, func(s string) bool { return strings.HasPrefix(s, op) })
			if at < 0 {
				t.Fatalf("no %q in %v", op, clean.plan.ops)
			}
			m := newModel(t, nil, defaultOptions())
			err := m.run(t, false, func(cancel context.CancelFunc) {
				m.plan.armed, m.plan.at, m.plan.mode, m.plan.cancel = true, at, errBefore, cancel
			})
			if exitcode.Of(err) != exitcode.Restored {
				t.Fatalf("first run: %v, want Restored", err)
			}
			saves := m.saves
			if err := m.run(t, true, nil); err != nil {
				t.Fatal(err)
			}
			if m.saves != saves {
				t.Errorf("the resume took %d new snapshots, want none", m.saves-saves)
			}
			m.checkClusterAsItWas(t, nil)
			m.checkBackup(t)
		})
	}
}
