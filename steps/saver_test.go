package steps

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

func newRun(host string) *checkpoint.Run {
	return checkpoint.New("backup", checkpoint.Cluster{Namespace: testNS, Name: testCluster, UID: testUID}, host,
		(&Engine{Steps: Backup()}).Names(), t0)
}

func annotationOf(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestClusterSaverSave proves the lock is taken only once preflight has
// passed, with a merge patch of the annotation conditioned on the
// resourceVersion read, and is refused while another unfinished run holds it.
func TestClusterSaverSave(t *testing.T) {
	other := newRun("other-host")
	finished := newRun("other-host")
	finished.Finished = true
	tests := []struct {
		name       string
		annotation string // "" : none
		conflicts  int
		preflight  checkpoint.Status
		held       bool // the saver already holds the lock
		wantCode   exitcode.Code
		wantTaken  bool
		wantErr    string
	}{
		{name: "preflight pending: file only", preflight: checkpoint.Pending},
		{name: "preflight running: file only", preflight: checkpoint.Running},
		{name: "preflight failed: file only", preflight: checkpoint.Failed},
		{name: "preflight done: takes the lock", preflight: checkpoint.Done, wantTaken: true},
		{name: "takes it through a conflict", preflight: checkpoint.Done, conflicts: 2, wantTaken: true},
		{name: "a finished run's annotation is taken over", preflight: checkpoint.Done, annotation: "finished", wantTaken: true},
		{name: "own annotation (resume from another machine) is kept", preflight: checkpoint.Done, annotation: "self", wantTaken: true},
		{name: "another unfinished run holds it", preflight: checkpoint.Done, annotation: "other",
			wantCode: exitcode.Precondition, wantErr: "is held by hcpsnap run " + other.RunID},
		{name: "unreadable annotation", preflight: checkpoint.Done, annotation: "{", wantCode: exitcode.Precondition,
			wantErr: "--abandon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			run := newRun("this-host")
			switch tt.annotation {
			case "other":
				fx.hs.hc.Annotations = map[string]string{RunAnnotation: annotationOf(t, other)}
			case "finished":
				fx.hs.hc.Annotations = map[string]string{RunAnnotation: annotationOf(t, finished)}
			case "self":
				fx.hs.hc.Annotations = map[string]string{RunAnnotation: annotationOf(t, run)}
			case "":
			default:
				fx.hs.hc.Annotations = map[string]string{RunAnnotation: tt.annotation}
			}
			before := fx.hs.current().Annotations[RunAnnotation]
			fx.hs.conflicts = tt.conflicts
			run.Step(StepPreflight).Status = tt.preflight
			run.Serial = 7
			dir := t.TempDir()
			saver := &ClusterSaver{Dir: dir, Client: fx.hs}

			err := saver.Save(quietContext(), run)

			if got := exitcode.Of(err); got != tt.wantCode {
				t.Fatalf("exit code %d, want %d: %v", got, tt.wantCode, err)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want %q", err, tt.wantErr)
			}
			// The run file is written whatever happens to the lock.
			if latest, err := checkpoint.Latest(dir, run.Cluster); err != nil || latest == nil || latest.RunID != run.RunID {
				t.Errorf("run file: %+v, %v", latest, err)
			}
			patches, annotates := fx.hs.writes()
			got := fx.hs.current().Annotations[RunAnnotation]
			if len(patches) != 0 {
				t.Errorf("spec patches %q, want none", patches)
			}
			if !tt.wantTaken {
				if annotates != 0 || got != before {
					t.Errorf("%d annotation patches; annotation %q, want it untouched", annotates, got)
				}
				return
			}
			if annotates != 1 {
				t.Errorf("%d annotation patches, want 1", annotates)
			}
			// One patch: the annotation, conditioned on the version read
			// last (the initial 1 plus one per injected conflict's re-read
			// is not a change, so still 1).
			wantPatch := `{"metadata":{"annotations":{"` + RunAnnotation + `":` + strconvQuote(t, got) + `},"resourceVersion":"1"}}`
			if fx.hs.annotates[0] != wantPatch {
				t.Errorf("patch\n %s\nwant\n %s", fx.hs.annotates[0], wantPatch)
			}
			held, err := checkpoint.Decode([]byte(got))
			if err != nil {
				t.Fatal(err)
			}
			if held.RunID != run.RunID || held.Serial != 7 || held.Host != "this-host" || held.StatusOf(StepPreflight) != checkpoint.Done {
				t.Errorf("annotation holds %+v", held)
			}
			// Once held, later saves update it even when the status says
			// nothing about preflight.
			run.Serial = 8
			if err := saver.Save(quietContext(), run); err != nil {
				t.Fatal(err)
			}
			if held, _ := Holder(fx.hs.current()); held == nil || held.Serial != 8 {
				t.Errorf("the second save did not update the annotation: %+v", held)
			}
		})
	}
}

func TestClusterSaverRelease(t *testing.T) {
	own := newRun("this-host")
	other := newRun("other-host")
	tests := []struct {
		name       string
		annotation string
		conflicts  int
		wantGone   bool
	}{
		{name: "own annotation is removed", annotation: annotationOf(t, own), wantGone: true},
		{name: "own annotation is removed through a conflict", annotation: annotationOf(t, own), conflicts: 1, wantGone: true},
		{name: "another run's annotation stays", annotation: annotationOf(t, other)},
		{name: "no annotation: nothing to do"},
		{name: "unreadable annotation stays", annotation: "{"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			fx.hs.hc.Annotations = map[string]string{"keep": "me"}
			if tt.annotation != "" {
				fx.hs.hc.Annotations[RunAnnotation] = tt.annotation
			}
			fx.hs.conflicts = tt.conflicts
			saver := &ClusterSaver{Dir: t.TempDir(), Client: fx.hs}
			if err := saver.Release(quietContext(), own); err != nil {
				t.Fatal(err)
			}
			ann := fx.hs.current().Annotations
			_, present := ann[RunAnnotation]
			_, annotates := fx.hs.writes()
			if tt.wantGone {
				if present || annotates != 1 {
					t.Errorf("annotation present=%v after %d annotation patches, want removed", present, annotates)
				}
				want := `{"metadata":{"annotations":{"` + RunAnnotation + `":null},"resourceVersion":"1"}}`
				if annotates == 1 && fx.hs.annotates[0] != want {
					t.Errorf("patch %s, want %s", fx.hs.annotates[0], want)
				}
			} else if ann[RunAnnotation] != tt.annotation || annotates != 0 {
				t.Errorf("annotation %q after %d annotation patches, want %q untouched", ann[RunAnnotation], annotates, tt.annotation)
			}
			if ann["keep"] != "me" {
				t.Error("Release removed another annotation")
			}
		})
	}
}

// TestClusterSaverWithBackup runs the backup with the ClusterSaver: the lock
// is taken right after preflight, before the first change, and held by the
// finished run until released.
func TestClusterSaverWithBackup(t *testing.T) {
	fx := newFixture(t, nil)
	s := fx.state(defaultOptions())
	saver := &ClusterSaver{Dir: t.TempDir(), Client: fx.hs}
	s.Saver = saver
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	j := fx.j.get()
	first := slices.Index(j, "hostedcluster annotate")
	pause := slices.IndexFunc(j, func(e string) bool { return strings.HasPrefix(e, "hostedcluster pausedUntil=") })
	if first < 1 || j[first-1] != "exec df" || pause < first {
		t.Errorf("the lock must be taken after preflight and before the pause: %q", j)
	}
	held, err := Holder(fx.hs.current())
	if err != nil || held == nil || held.RunID != s.Run.RunID || !held.Finished {
		t.Fatalf("annotation after the run: %+v, %v", held, err)
	}
	if err := saver.Release(quietContext(), s.Run); err != nil {
		t.Fatal(err)
	}
	if _, ok := fx.hs.current().Annotations[RunAnnotation]; ok {
		t.Error("annotation left after Release")
	}
	checkRestored(t, fx, nil)
}

// racingLock lets another run take the lock between our preflight's check
// and our first save that takes it.
type racingLock struct {
	*fakeHyperShift
	other string
	done  bool
}

func (r *racingLock) GetHostedCluster(ctx context.Context, namespace, name string) (*hyperv1.HostedCluster, error) {
	if !r.done {
		r.done = true
		r.mu.Lock()
		r.hc.Annotations = map[string]string{RunAnnotation: r.other}
		r.mu.Unlock()
	}
	return r.fakeHyperShift.GetHostedCluster(ctx, namespace, name)
}

// TestClusterSaverLostRace proves that losing the lock race after preflight
// refuses the run before any change, and changes nothing of the other run's.
func TestClusterSaverLostRace(t *testing.T) {
	fx := newFixture(t, nil)
	s := fx.state(defaultOptions())
	s.Saver = &ClusterSaver{Dir: t.TempDir(), Client: &racingLock{fakeHyperShift: fx.hs, other: annotationOf(t, newRun("other-host"))}}

	err := fx.execute(s)

	if got := exitcode.Of(err); got != exitcode.Precondition {
		t.Fatalf("exit code %d, want Precondition: %v", got, err)
	}
	if !strings.Contains(err.Error(), "is held by hcpsnap run") {
		t.Errorf("error %q does not say who holds the cluster", err)
	}
	if p, a := fx.hs.writes(); len(p) != 0 || a != 0 {
		t.Errorf("HostedCluster patches %v, annotation patches %d", p, a)
	}
	if w := writeActions(fx.kube); len(w) != 0 {
		t.Errorf("clientset writes: %v", w)
	}
	if ops := fx.exec.ops(); !slices.Equal(ops, []string{"tools", "endpoint-status", "df"}) {
		t.Errorf("pod commands %v", ops)
	}
}

// TestClusterSaverFullStateFolder: a run file that cannot be written does
// not keep the annotation from recording the run; the error names the file.
func TestClusterSaverFullStateFolder(t *testing.T) {
	fx := newFixture(t, nil)
	run := newRun("this-host")
	run.Step(StepPreflight).Status = checkpoint.Done
	dir := t.TempDir()
	blocked := dir + "/not-a-folder"
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	saver := &ClusterSaver{Dir: blocked, Client: fx.hs}
	run.Serial = 3
	err := saver.Save(quietContext(), run)
	if err == nil {
		t.Fatal("Save succeeded although the run file could not be written")
	}
	held, herr := Holder(fx.hs.current())
	if herr != nil || held == nil || held.Serial != 3 {
		t.Errorf("annotation %+v, %v; want the run recorded there", held, herr)
	}
}

// strconvQuote renders v as a JSON string, as encoding/json does.
func strconvQuote(t *testing.T, v string) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
