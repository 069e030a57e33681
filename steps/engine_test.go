package steps

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// call is one invocation of a synthetic step.
type call struct {
	name        string
	cancelled   bool // the context was already cancelled when the step started
	hasDeadline bool
}

// recorder builds synthetic steps that record their calls and behave as a
// test says.
type recorder struct {
	mu    sync.Mutex
	calls []call
	// behave, by step name, decides what the step returns; nil succeeds.
	behave map[string]func(ctx context.Context) error
}

func (r *recorder) run(name string) func(context.Context, *State) error {
	return func(ctx context.Context, _ *State) error {
		_, dl := ctx.Deadline()
		r.mu.Lock()
		r.calls = append(r.calls, call{name: name, cancelled: ctx.Err() != nil, hasDeadline: dl})
		f := r.behave[name]
		r.mu.Unlock()
		if f != nil {
			return f(ctx)
		}
		return nil
	}
}

func (r *recorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.calls {
		out = append(out, c.name)
	}
	return out
}

// synthWorkflow has the shape of the backup workflow (checked against
// Backup() below): a read-only check, two changes bracketing the work, their
// counterparts, and a clean-up that reverts the work.
func (r *recorder) synthWorkflow(skip map[string]bool) []Step {
	def := []struct {
		name, reverts string
		readOnly      bool
	}{
		{"preflight", "", true},
		{"pause", "", false},
		{"scale-down", "", false},
		{"snapshot-save", "", false},
		{"scale-up", "scale-down", false},
		{"resume", "pause", false},
		{"upload", "", false},
		{"cleanup", "snapshot-save", false},
		{"manifest", "", false},
	}
	var steps []Step
	for _, d := range def {
		st := Step{Name: d.name, Summary: "synthetic " + d.name, ReadOnly: d.readOnly, Reverts: d.reverts, Run: r.run(d.name)}
		if skip[d.name] {
			st.Skip = func(*State) bool { return true }
		}
		steps = append(steps, st)
	}
	return steps
}

func newSynthState(e *Engine, saver Saver) *State {
	run := checkpoint.New("backup", checkpoint.Cluster{Namespace: testNS, Name: testCluster}, "test-host", e.Names(), t0)
	return &State{Run: run, Out: &Outputs{}, Saver: saver, Now: (&tickClock{t: t0}).Now}
}

var (
	errBoom     = errors.New("boom")
	errDiskFull = errors.New("disk full")
	errUndo     = errors.New("apiserver gone")
)

func fails(err error) func(context.Context) error { return func(context.Context) error { return err } }

func TestEngineExecute(t *testing.T) {
	all := []string{"preflight", "pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"}
	const (
		D = checkpoint.Done
		P = checkpoint.Pending
		F = checkpoint.Failed
		U = checkpoint.Undone
		S = checkpoint.Skipped
	)
	tests := []struct {
		name string
		// behave sets what steps return; "cancel" entries cancel the
		// parent context (Ctrl-C) from inside that step.
		behave       map[string]func(context.Context) error
		cancelIn     string // cancel the parent, then fail with ctx.Err()
		cancelAfter  string // cancel the parent, then succeed
		saveFailsFor string // the save that marks this step running fails once
		// saveFailsAfter: the save that marks this step done fails, and
		// every later save fails while it still says done, as ClusterSaver
		// does when another run took the lock.
		saveFailsAfter string
		skip           map[string]bool
		skipSteps      []string
		wantCalls      []string
		wantCode       exitcode.Code
		wantStatus     map[string]checkpoint.Status
		wantErr        []string // substrings, in order
		wantIs         error
	}{
		{
			name:      "every step runs once, in order",
			wantCalls: all,
			wantCode:  exitcode.OK,
			wantStatus: map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": D,
				"scale-up": D, "resume": D, "upload": D, "cleanup": D, "manifest": D},
		},
		{
			name:   "failure after the bracket closed reverts only what is still changed",
			behave: map[string]func(context.Context) error{"upload": fails(errBoom)},
			wantCalls: []string{"preflight", "pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload",
				"cleanup"},
			wantCode: exitcode.Restored,
			wantStatus: map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": U,
				"scale-up": D, "resume": D, "upload": F, "cleanup": U, "manifest": P},
			wantErr: []string{"step upload: boom", "every change was undone"},
			wantIs:  errBoom,
		},
		{
			name:   "failure inside the bracket runs every counterpart in reverse order",
			behave: map[string]func(context.Context) error{"snapshot-save": fails(errDiskFull)},
			wantCalls: []string{"preflight", "pause", "scale-down", "snapshot-save",
				"cleanup", "scale-up", "resume"},
			wantCode: exitcode.Restored,
			wantStatus: map[string]checkpoint.Status{"preflight": D, "pause": U, "scale-down": U, "snapshot-save": U,
				"scale-up": U, "resume": U, "upload": P, "cleanup": U, "manifest": P},
			wantErr: []string{"step snapshot-save: disk full"},
			wantIs:  errDiskFull,
		},
		{
			name:      "the failing step's own change is reverted too",
			behave:    map[string]func(context.Context) error{"scale-down": fails(errBoom)},
			wantCalls: []string{"preflight", "pause", "scale-down", "scale-up", "resume"},
			wantCode:  exitcode.Restored,
			wantStatus: map[string]checkpoint.Status{"pause": U, "scale-down": U, "snapshot-save": P,
				"scale-up": U, "resume": U, "cleanup": P},
		},
		{
			name:     "Ctrl-C inside a step: counterparts run under a live context, exit Interrupted",
			cancelIn: "snapshot-save",
			wantCalls: []string{"preflight", "pause", "scale-down", "snapshot-save",
				"cleanup", "scale-up", "resume"},
			wantCode: exitcode.Interrupted,
			wantStatus: map[string]checkpoint.Status{"pause": U, "scale-down": U, "snapshot-save": U,
				"scale-up": U, "resume": U, "cleanup": U},
			wantErr: []string{"interrupted during snapshot-save", "context canceled"},
			wantIs:  context.Canceled,
		},
		{
			name:        "Ctrl-C between steps: no further step starts, exit Interrupted",
			cancelAfter: "scale-down",
			wantCalls:   []string{"preflight", "pause", "scale-down", "scale-up", "resume"},
			wantCode:    exitcode.Interrupted,
			wantStatus: map[string]checkpoint.Status{"pause": U, "scale-down": U, "snapshot-save": P,
				"scale-up": U, "resume": U},
			wantErr: []string{"interrupted during snapshot-save", "before step snapshot-save"},
		},
		{
			name:       "failure in the read-only first step is a precondition: no undo",
			behave:     map[string]func(context.Context) error{"preflight": fails(errBoom)},
			wantCalls:  []string{"preflight"},
			wantCode:   exitcode.Precondition,
			wantStatus: map[string]checkpoint.Status{"preflight": F, "pause": P, "resume": P},
			wantErr:    []string{"step preflight: boom"},
			wantIs:     errBoom,
		},
		{
			name: "a precondition error of the first step is returned as it is",
			behave: map[string]func(context.Context) error{"preflight": func(context.Context) error {
				return exitcode.Preconditionf("HostedCluster not found")
			}},
			wantCalls: []string{"preflight"},
			wantCode:  exitcode.Precondition,
			wantErr:   []string{"step preflight: HostedCluster not found"},
		},
		{
			name: "a precondition error after a change still undoes it and exits Restored",
			behave: map[string]func(context.Context) error{"scale-down": func(context.Context) error {
				return exitcode.Preconditionf("Deployment gone")
			}},
			wantCalls: []string{"preflight", "pause", "scale-down", "scale-up", "resume"},
			wantCode:  exitcode.Restored,
		},
		{
			name: "an undo that fails means manual action; the original error comes first",
			behave: map[string]func(context.Context) error{
				"snapshot-save": fails(errDiskFull),
				"scale-up":      fails(errUndo),
			},
			wantCalls: []string{"preflight", "pause", "scale-down", "snapshot-save",
				"cleanup", "scale-up", "resume"},
			wantCode: exitcode.ManualAction,
			// scale-down stays done: its change is still in place.
			wantStatus: map[string]checkpoint.Status{"pause": U, "scale-down": D, "snapshot-save": U,
				"scale-up": F, "resume": U, "cleanup": U},
			wantErr: []string{"step snapshot-save: disk full", "undo: step scale-up: apiserver gone", "--resume"},
			wantIs:  errDiskFull,
		},
		{
			name:         "a save that fails before a step starts: the step is not undone",
			saveFailsFor: "scale-down",
			wantCalls:    []string{"preflight", "pause", "resume"},
			wantCode:     exitcode.Restored,
			wantStatus: map[string]checkpoint.Status{"pause": U, "scale-down": P, "scale-up": P,
				"resume": U, "snapshot-save": P},
			wantErr: []string{"step scale-down: save checkpoint: lock lost"},
		},
		{
			name:         "a save that fails before the first change: nothing to undo",
			saveFailsFor: "pause",
			wantCalls:    []string{"preflight"},
			wantCode:     exitcode.Precondition,
			wantStatus:   map[string]checkpoint.Status{"preflight": D, "pause": P, "resume": P},
		},
		{
			name:           "a save that fails after the read-only first step (lock lost): precondition, nothing undone",
			saveFailsAfter: "preflight",
			wantCalls:      []string{"preflight"},
			wantCode:       exitcode.Precondition,
			wantStatus:     map[string]checkpoint.Status{"preflight": F, "pause": P, "resume": P},
			wantErr:        []string{"step preflight: save checkpoint: held by another run"},
		},
		{
			name:           "a save that fails after a change: the change is undone",
			saveFailsAfter: "pause",
			wantCalls:      []string{"preflight", "pause", "resume"},
			wantCode:       exitcode.Restored,
			wantStatus:     map[string]checkpoint.Status{"pause": U, "resume": U},
			wantErr:        []string{"step pause: save checkpoint: held by another run"},
		},
		{
			name:      "Skip func marks steps skipped and their counterparts do not run",
			skip:      map[string]bool{"pause": true, "resume": true},
			behave:    map[string]func(context.Context) error{"snapshot-save": fails(errBoom)},
			wantCalls: []string{"preflight", "scale-down", "snapshot-save", "cleanup", "scale-up"},
			wantCode:  exitcode.Restored,
			wantStatus: map[string]checkpoint.Status{"pause": S, "resume": P, "scale-down": U,
				"scale-up": U},
		},
		{
			name:      "--skip-steps marks steps skipped",
			skipSteps: []string{"cleanup", "upload"},
			wantCalls: []string{"preflight", "pause", "scale-down", "snapshot-save", "scale-up", "resume", "manifest"},
			wantCode:  exitcode.OK,
			wantStatus: map[string]checkpoint.Status{"upload": S, "cleanup": S, "manifest": D,
				"snapshot-save": D},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(quietContext())
			defer cancel()
			rec := &recorder{behave: map[string]func(context.Context) error{}}
			for k, v := range tt.behave {
				rec.behave[k] = v
			}
			if tt.cancelIn != "" {
				rec.behave[tt.cancelIn] = func(ctx context.Context) error {
					cancel()
					return ctx.Err()
				}
			}
			if tt.cancelAfter != "" {
				rec.behave[tt.cancelAfter] = func(context.Context) error {
					cancel()
					return nil
				}
			}
			saver := &memSaver{}
			if tt.saveFailsFor != "" {
				var once sync.Once
				saver.failWhen = func(run *checkpoint.Run) error {
					var err error
					if run.StatusOf(tt.saveFailsFor) == checkpoint.Running {
						once.Do(func() { err = errors.New("lock lost") })
					}
					return err
				}
			}
			if tt.saveFailsAfter != "" {
				saver.failWhen = func(run *checkpoint.Run) error {
					if run.StatusOf(tt.saveFailsAfter) == checkpoint.Done {
						return errors.New("held by another run")
					}
					return nil
				}
			}
			e := &Engine{Steps: rec.synthWorkflow(tt.skip), UndoTimeout: 7 * time.Second}
			s := newSynthState(e, saver)
			s.Opts.SkipSteps = tt.skipSteps

			err := e.Execute(ctx, s)

			if got := rec.names(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls\n got %v\nwant %v", got, tt.wantCalls)
			}
			if got := exitcode.Of(err); got != tt.wantCode {
				t.Errorf("exit code %d, want %d (err: %v)", got, tt.wantCode, err)
			}
			for name, want := range tt.wantStatus {
				if got := s.Run.StatusOf(name); got != want {
					t.Errorf("status of %s = %s, want %s", name, got, want)
				}
			}
			if (tt.wantCode == exitcode.OK) != s.Run.Finished {
				t.Errorf("Finished = %v with exit code %d", s.Run.Finished, tt.wantCode)
			}
			if err != nil {
				msg := err.Error()
				pos := 0
				for _, w := range tt.wantErr {
					i := strings.Index(msg[pos:], w)
					if i < 0 {
						t.Errorf("error %q lacks %q after position %d", msg, w, pos)
						break
					}
					pos += i + len(w)
				}
				if len(tt.wantErr) > 0 && !strings.HasPrefix(msg, tt.wantErr[0]) && tt.wantCode != exitcode.Interrupted {
					t.Errorf("error %q does not start with the original error %q", msg, tt.wantErr[0])
				}
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantIs)
			}
			// Whatever happened to the parent context, the counterparts
			// ran under a live one, bounded by UndoTimeout.
			failedAt := len(rec.calls)
			for i, c := range rec.calls {
				if c.cancelled {
					t.Errorf("step %s started under a cancelled context", c.name)
				}
				if i > 0 && rec.calls[i-1].name == tt.cancelIn {
					failedAt = i
				}
			}
			if tt.cancelIn != "" {
				for _, c := range rec.calls[failedAt:] {
					if !c.hasDeadline {
						t.Errorf("undo %s ran without the undo timeout", c.name)
					}
				}
			}
		})
	}
}

// TestEngineResume proves a resumed run continues from its first unfinished
// step, and that a bracket closed by an undo is opened again first.
func TestEngineResume(t *testing.T) {
	const (
		D = checkpoint.Done
		R = checkpoint.Running
		F = checkpoint.Failed
		U = checkpoint.Undone
		S = checkpoint.Skipped
	)
	tests := []struct {
		name      string
		status    map[string]checkpoint.Status
		wantCalls []string
	}{
		{
			name:      "crashed during snapshot-save: continue at snapshot-save",
			status:    map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": R},
			wantCalls: []string{"snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"},
		},
		{
			name: "crashed during upload: the API stays up, continue at upload",
			status: map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": D,
				"scale-up": D, "resume": D, "upload": R},
			wantCalls: []string{"upload", "cleanup", "manifest"},
		},
		{
			name: "snapshot-save undone after scale-up and resume ran: pause and scale down again first",
			status: map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": U,
				"scale-up": D, "resume": D, "upload": F, "cleanup": U},
			wantCalls: []string{"pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"},
		},
		{
			name: "everything undone after a failed snapshot-save: all again from pause",
			status: map[string]checkpoint.Status{"preflight": D, "pause": U, "scale-down": U, "snapshot-save": U,
				"scale-up": U, "resume": U, "cleanup": U},
			wantCalls: []string{"pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"},
		},
		{
			name: "skipped steps stay skipped",
			status: map[string]checkpoint.Status{"preflight": D, "pause": S, "scale-down": S, "snapshot-save": U,
				"scale-up": S, "resume": S, "upload": F, "cleanup": U},
			wantCalls: []string{"snapshot-save", "upload", "cleanup", "manifest"},
		},
		{
			name:      "finished run: nothing runs",
			status:    map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": D, "scale-up": D, "resume": D, "upload": D, "cleanup": D, "manifest": D},
			wantCalls: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			e := &Engine{Steps: rec.synthWorkflow(nil)}
			s := newSynthState(e, &memSaver{})
			for name, st := range tt.status {
				s.Run.Step(name).Status = st
			}
			if err := e.Execute(quietContext(), s); err != nil {
				t.Fatal(err)
			}
			if got := rec.names(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls\n got %v\nwant %v", got, tt.wantCalls)
			}
			for _, r := range s.Run.Steps {
				if r.Status != checkpoint.Done && r.Status != checkpoint.Skipped {
					t.Errorf("after the resumed run, %s is %s", r.Name, r.Status)
				}
			}
		})
	}
}

// TestEngineFailThenResume runs a failed run and its resumption on the same
// checkpoint, as `hcpsnap backup --resume` does.
func TestEngineFailThenResume(t *testing.T) {
	rec := &recorder{behave: map[string]func(context.Context) error{"upload": fails(errBoom)}}
	e := &Engine{Steps: rec.synthWorkflow(nil)}
	s := newSynthState(e, &memSaver{})
	if err := e.Execute(quietContext(), s); exitcode.Of(err) != exitcode.Restored {
		t.Fatalf("first run: %v (exit %d), want Restored", err, exitcode.Of(err))
	}
	first := rec.names()
	rec.behave = nil
	if err := e.Execute(quietContext(), s); err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	got := rec.names()[len(first):]
	want := []string{"pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"}
	if !slices.Equal(got, want) {
		t.Errorf("resumed calls\n got %v\nwant %v", got, want)
	}
}

func TestEngineValidateNames(t *testing.T) {
	e := &Engine{Steps: Backup()}
	tests := []struct {
		name  string
		names []string
		want  exitcode.Code
	}{
		{"none", nil, exitcode.OK},
		{"known", []string{StepCleanupPodFile, StepWriteManifest}, exitcode.OK},
		{"unknown", []string{StepCleanupPodFile, "cleanup"}, exitcode.Usage},
		{"case matters", []string{"Preflight"}, exitcode.Usage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.ValidateNames(tt.names)
			if got := exitcode.Of(err); got != tt.want {
				t.Fatalf("exit code %d, want %d (err: %v)", got, tt.want, err)
			}
			if err != nil && !strings.Contains(err.Error(), strings.Join(e.Names(), ", ")) {
				t.Errorf("error %q does not list the steps", err)
			}
		})
	}
}

// TestBackupWorkflowShape pins the backup workflow's order and brackets,
// which the synthetic workflow above mirrors.
func TestBackupWorkflowShape(t *testing.T) {
	want := []struct{ name, reverts string }{
		{StepPreflight, ""}, {StepPause, ""}, {StepScaleDown, ""}, {StepSnapshotSave, ""},
		{StepScaleUp, StepScaleDown}, {StepResume, StepPause}, {StepUpload, ""}, {StepSaveKeys, ""},
		{StepCleanupPodFile, StepSnapshotSave}, {StepWriteManifest, ""},
	}
	got := Backup()
	if len(got) != len(want) {
		t.Fatalf("%d steps, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Name != w.name || got[i].Reverts != w.reverts {
			t.Errorf("step %d = %s (reverts %q), want %s (reverts %q)", i, got[i].Name, got[i].Reverts, w.name, w.reverts)
		}
		if got[i].Run == nil || got[i].Plan == nil || got[i].Summary == "" {
			t.Errorf("step %s lacks Run, Plan or Summary", got[i].Name)
		}
		if got[i].ReadOnly != (i == 0) {
			t.Errorf("step %s ReadOnly = %v", got[i].Name, got[i].ReadOnly)
		}
	}
}
