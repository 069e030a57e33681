package runbook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	charmlog "github.com/charmbracelet/log"

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

func (r *recorder) run(name string) func(context.Context, *synthState) error {
	return func(ctx context.Context, _ *synthState) error {
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

// synthWorkflow has the shape of the backup workflow (steps pins its own
// shape): a read-only check, two changes bracketing the work, their
// counterparts, and a clean-up that reverts the work.
func (r *recorder) synthWorkflow(skip map[string]bool) []Step[*synthState] {
	def := []struct {
		name, reverts string
		readOnly      bool
		service       bool
		reapply       bool
		needs, uses   []string
	}{
		{name: "preflight", readOnly: true},
		{name: "pause", reapply: true},
		{name: "scale-down", reapply: true, needs: []string{"pause"}},
		{name: "snapshot-save", needs: []string{"pause", "scale-down"}},
		{name: "scale-up", reverts: "scale-down", service: true},
		{name: "resume", reverts: "pause", service: true},
		{name: "upload", needs: []string{"snapshot-save"}, uses: []string{"snapshot-save"}},
		{name: "cleanup", reverts: "snapshot-save", uses: []string{"snapshot-save"}},
		{name: "manifest", uses: []string{"snapshot-save", "upload"}},
	}
	var steps []Step[*synthState]
	for _, d := range def {
		st := Step[*synthState]{Name: d.name, Summary: "synthetic " + d.name, ReadOnly: d.readOnly, Reverts: d.reverts,
			RestoresService: d.service, Reapply: d.reapply, Needs: d.needs, Uses: d.uses, Run: r.run(d.name)}
		if skip[d.name] {
			st.Skip = func(*synthState) bool { return true }
		}
		steps = append(steps, st)
	}
	return steps
}

// synthState is the smallest state the engine can carry.
type synthState struct {
	mu    sync.Mutex
	run   *checkpoint.Run
	saver *memSaver
	skip  []string
	clock time.Time
}

func (s *synthState) Checkpoint() *checkpoint.Run { return s.run }

func (s *synthState) Save(context.Context) error {
	s.run.Serial++
	if s.saver != nil && s.saver.failWhen != nil {
		if err := s.saver.failWhen(s.run); err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
	}
	return nil
}

func (s *synthState) Emit(Event) {}

func (s *synthState) Clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = s.clock.Add(time.Second)
	return s.clock
}

func (s *synthState) SkipSteps() []string { return s.skip }

// memSaver decides whether a save succeeds.
type memSaver struct {
	failWhen func(*checkpoint.Run) error
}

var t0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

func quietContext() context.Context {
	return charmlog.WithContext(context.Background(), charmlog.New(io.Discard))
}

func newSynthState(e *Engine[*synthState], saver *memSaver) *synthState {
	run := checkpoint.New("backup", checkpoint.Cluster{Namespace: "clusters", Name: "example"}, "test-host", e.Names(), t0)
	return &synthState{run: run, saver: saver, clock: t0}
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
			name:   "failure inside the bracket: the API comes back first, then the clean-up",
			behave: map[string]func(context.Context) error{"snapshot-save": fails(errDiskFull)},
			wantCalls: []string{"preflight", "pause", "scale-down", "snapshot-save",
				"scale-up", "resume", "cleanup"},
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
				"scale-up", "resume", "cleanup"},
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
				"scale-up", "resume", "cleanup"},
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
			wantCalls: []string{"preflight", "scale-down", "snapshot-save", "scale-up", "cleanup"},
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
			e := &Engine[*synthState]{Steps: rec.synthWorkflow(tt.skip), UndoTimeout: 7 * time.Second}
			s := newSynthState(e, saver)
			s.skip = tt.skipSteps

			err := e.Execute(ctx, s)

			if got := rec.names(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls\n got %v\nwant %v", got, tt.wantCalls)
			}
			if got := exitcode.Of(err); got != tt.wantCode {
				t.Errorf("exit code %d, want %d (err: %v)", got, tt.wantCode, err)
			}
			for name, want := range tt.wantStatus {
				if got := s.run.StatusOf(name); got != want {
					t.Errorf("status of %s = %s, want %s", name, got, want)
				}
			}
			if (tt.wantCode == exitcode.OK) != s.run.Finished {
				t.Errorf("Finished = %v with exit code %d", s.run.Finished, tt.wantCode)
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
			// pause and scale-down converge: made again, as a counterpart may
			// have run without being recorded.
			name:      "crashed during snapshot-save: make the bracket again, continue at snapshot-save",
			status:    map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": R},
			wantCalls: []string{"pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"},
		},
		{
			name: "a failed scale-up undo: scale down again before the snapshot",
			status: map[string]checkpoint.Status{"preflight": D, "pause": U, "scale-down": D, "snapshot-save": U,
				"scale-up": F, "resume": U, "cleanup": U},
			wantCalls: []string{"pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"},
		},
		{
			name: "uploaded, then the manifest failed: only the manifest again",
			status: map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": D,
				"scale-up": D, "resume": D, "upload": D, "cleanup": D, "manifest": F},
			wantCalls: []string{"manifest"},
		},
		{
			name: "a snapshot taken again voids the upload made from the earlier one",
			status: map[string]checkpoint.Status{"preflight": D, "pause": D, "scale-down": D, "snapshot-save": U,
				"scale-up": D, "resume": D, "upload": D, "cleanup": U, "manifest": F},
			wantCalls: []string{"pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"},
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
			e := &Engine[*synthState]{Steps: rec.synthWorkflow(nil)}
			s := newSynthState(e, &memSaver{})
			for name, st := range tt.status {
				s.run.Step(name).Status = st
			}
			if err := e.Execute(quietContext(), s); err != nil {
				t.Fatal(err)
			}
			if got := rec.names(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls\n got %v\nwant %v", got, tt.wantCalls)
			}
			for _, r := range s.run.Steps {
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
	e := &Engine[*synthState]{Steps: rec.synthWorkflow(nil)}
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
	e := &Engine[*synthState]{Steps: (&recorder{}).synthWorkflow(nil)}
	tests := []struct {
		name  string
		names []string
		want  exitcode.Code
	}{
		{"none", nil, exitcode.OK},
		{"known", []string{"cleanup", "manifest"}, exitcode.OK},
		{"unknown", []string{"cleanup", "clean-up"}, exitcode.Usage},
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

// TestEngineUndoRunsWithoutRecord: once the checkpoint cannot be saved any
// more (a full state folder, a refused write of the lock), the failure's
// undo still runs every counterpart, and the exit says the lock stays.
func TestEngineUndoRunsWithoutRecord(t *testing.T) {
	rec := &recorder{}
	e := &Engine[*synthState]{Steps: rec.synthWorkflow(nil), UndoTimeout: time.Second}
	broken := false
	s := newSynthState(e, &memSaver{failWhen: func(run *checkpoint.Run) error {
		if run.StatusOf("snapshot-save") == checkpoint.Running {
			broken = true
		}
		if broken {
			return errDiskFull
		}
		return nil
	}})
	err := e.Execute(quietContext(), s)
	want := []string{"preflight", "pause", "scale-down", "scale-up", "resume"}
	if got := rec.names(); !slices.Equal(got, want) {
		t.Errorf("calls\n got %v\nwant %v", got, want)
	}
	if exitcode.Of(err) != exitcode.ManualAction || !strings.Contains(err.Error(), "could not be recorded") ||
		!strings.Contains(err.Error(), "--resume") || !errors.Is(err, errDiskFull) {
		t.Errorf("err %v (exit %d), want ManualAction naming the record and --resume", err, exitcode.Of(err))
	}
}

// TestEngineProductOutlivesItsFile: a failure after every step that needed
// the snapshot file has finished removes the file, but keeps the snapshot:
// a resumed run does not take another.
func TestEngineProductOutlivesItsFile(t *testing.T) {
	rec := &recorder{behave: map[string]func(context.Context) error{"manifest": fails(errBoom)}}
	e := &Engine[*synthState]{Steps: rec.synthWorkflow(nil)}
	s := newSynthState(e, &memSaver{})
	if err := e.Execute(quietContext(), s); exitcode.Of(err) != exitcode.Restored {
		t.Fatalf("first run: %v, want Restored", err)
	}
	if st := s.run.StatusOf("snapshot-save"); st != checkpoint.Done {
		t.Errorf("snapshot-save is %s after its file was removed with every user done, want done", st)
	}
	if st := s.run.StatusOf("cleanup"); st != checkpoint.Done {
		t.Errorf("cleanup is %s, want done", st)
	}
	first := len(rec.names())
	rec.behave = nil
	if err := e.Execute(quietContext(), s); err != nil {
		t.Fatal(err)
	}
	if got := rec.names()[first:]; !slices.Equal(got, []string{"manifest"}) {
		t.Errorf("resumed calls %v, want [manifest]", got)
	}
}

// TestEngineUndoDeadlines: each counterpart has its own deadline, so one
// that uses all of its time leaves the next its own.
func TestEngineUndoDeadlines(t *testing.T) {
	rec := &recorder{behave: map[string]func(context.Context) error{
		"snapshot-save": fails(errBoom),
		"scale-up": func(ctx context.Context) error {
			<-ctx.Done() // hangs until its deadline
			return ctx.Err()
		},
		"resume": func(ctx context.Context) error {
			if dl, ok := ctx.Deadline(); !ok || time.Until(dl) < 100*time.Millisecond {
				return errors.New("resume got no time of its own")
			}
			return nil
		},
	}}
	e := &Engine[*synthState]{Steps: rec.synthWorkflow(nil), UndoTimeout: 300 * time.Millisecond}
	s := newSynthState(e, &memSaver{})
	err := e.Execute(quietContext(), s)
	if exitcode.Of(err) != exitcode.ManualAction || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want ManualAction from scale-up's deadline", err)
	}
	if st := s.run.StatusOf("resume"); st != checkpoint.Undone {
		t.Errorf("resume is %s, want undone", st)
	}
	if st := s.run.StatusOf("cleanup"); st != checkpoint.Undone {
		t.Errorf("cleanup is %s, want undone", st)
	}
}

// TestEngineLostChangeIsMadeAgain: a step that finds the change it needs
// gone (the snapshot file went with a restarted pod) makes the engine take
// that step again, with its bracket, once.
func TestEngineLostChangeIsMadeAgain(t *testing.T) {
	lost := 0
	rec := &recorder{behave: map[string]func(context.Context) error{
		"upload": func(context.Context) error {
			lost++
			if lost == 1 {
				return &LostError{Step: "snapshot-save", Err: errors.New("file gone")}
			}
			return nil
		},
	}}
	e := &Engine[*synthState]{Steps: rec.synthWorkflow(nil)}
	s := newSynthState(e, &memSaver{})
	if err := e.Execute(quietContext(), s); err != nil {
		t.Fatal(err)
	}
	want := []string{"preflight", "pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload",
		"pause", "scale-down", "snapshot-save", "scale-up", "resume", "upload", "cleanup", "manifest"}
	if got := rec.names(); !slices.Equal(got, want) {
		t.Errorf("calls\n got %v\nwant %v", got, want)
	}

	// A second loss is a failure like any other.
	rec = &recorder{behave: map[string]func(context.Context) error{"upload": func(context.Context) error {
		return &LostError{Step: "snapshot-save", Err: errors.New("file gone")}
	}}}
	e = &Engine[*synthState]{Steps: rec.synthWorkflow(nil)}
	s = newSynthState(e, &memSaver{})
	if err := e.Execute(quietContext(), s); exitcode.Of(err) != exitcode.Restored {
		t.Fatalf("err %v, want Restored", err)
	}
}

// TestEngineRetakesAreBounded: with Retakes n, a change lost again and again
// is made again n times, then the loss is a failure like any other.
func TestEngineRetakesAreBounded(t *testing.T) {
	for _, n := range []int{0, 1, 3} {
		uploads := 0
		rec := &recorder{behave: map[string]func(context.Context) error{"upload": func(context.Context) error {
			uploads++
			return &LostError{Step: "snapshot-save", Err: errors.New("stream broke")}
		}}}
		e := &Engine[*synthState]{Steps: rec.synthWorkflow(nil), Retakes: n}
		s := newSynthState(e, &memSaver{})
		if err := e.Execute(quietContext(), s); exitcode.Of(err) != exitcode.Restored {
			t.Fatalf("Retakes %d: err %v, want Restored", n, err)
		}
		if want := max(1, n) + 1; uploads != want {
			t.Errorf("Retakes %d: %d uploads, want %d", n, uploads, want)
		}
	}
}
