package runbook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	charmlog "github.com/charmbracelet/log"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/shell"
)

// State is what the engine needs of the state a workflow carries: the run's
// checkpoint, a way to persist it, a clock and a sink for progress events.
// The workflow's own state type (steps.State for the backup) implements it
// and is passed, as it is, to every step.
type State interface {
	// Checkpoint returns the run whose step records the engine keeps.
	Checkpoint() *checkpoint.Run
	// Save persists the checkpoint with the workflow's outputs.
	Save(ctx context.Context) error
	// Emit reports a progress event (the -o json stream).
	Emit(Event)
	// Clock returns the current time.
	Clock() time.Time
	// SkipSteps returns the step names the user left out (--skip-steps).
	SkipSteps() []string
}

// Step is one line of a runbook: a plain value, so that the same list drives
// the run, the checkpoint, --skip-steps, --help and the --dry-run runbook.
type Step[S State] struct {
	// Name is stable and kebab-case: a checkpoint key and a --skip-steps value.
	Name string
	// Summary is one sentence for --help and the runbook.
	Summary string
	// ReadOnly steps change nothing; a failure before any other step ran is a
	// failed precondition.
	ReadOnly bool
	// Reverts names the step whose change this one reverts (scale-up reverts
	// scale-down). Besides its own place in the sequence, the engine runs it
	// whenever the reverted step ran and the run fails or is interrupted.
	Reverts string
	// RestoresService marks a counterpart that brings service back (scale-up,
	// resume): in an undo it runs before every other counterpart.
	RestoresService bool
	// Needs names the earlier steps whose change must be in place while this
	// one runs (the API down for the snapshot, the file in the pod for the
	// upload). A change that was reverted is made again before a step that
	// needs it runs; one whose every user has finished is not.
	Needs []string
	// Uses names the earlier steps whose outputs this step reads. When one of
	// them runs again, what this step produced from the earlier outputs is
	// void, and it runs again too.
	Uses []string
	// Reapply marks a change that converges and costs little (a patch to a
	// value, a scale to 0): a resumed run makes it again before a step that
	// needs it, even when the checkpoint says it is in place, because a
	// counterpart may have run without being recorded.
	Reapply bool
	// Skip reports whether the options leave this step out (--online).
	Skip func(S) bool
	// Run performs the step. It converges on a target state, so running it
	// again after a crash is harmless.
	Run func(context.Context, S) error
	// Plan describes, for a dry run, what Run would do with the real values
	// read from the cluster; it must not change anything.
	Plan func(context.Context, S) (Plan, error)
}

// Plan is a step's entry in the --dry-run runbook.
type Plan struct {
	// Actions say in words what the step would do, with real values.
	Actions []string `json:"actions"`
	// Commands are what a person could run by hand to do the same.
	Commands []string `json:"commands,omitempty"`
}

// Event is one line of the NDJSON stream printed with -o json.
type Event struct {
	MessageType string  `json:"message_type"`
	Step        string  `json:"step,omitempty"`
	Message     string  `json:"message,omitempty"`
	Error       string  `json:"error,omitempty"`
	Seconds     float64 `json:"seconds,omitempty"`
	BytesDone   int64   `json:"bytes_done,omitempty"`
	BytesTotal  int64   `json:"bytes_total,omitempty"`
}

// LostError says that the change of an earlier step, which the failing step
// needs, is gone (the snapshot file vanished with a restarted pod). The
// engine then runs that step again, once per run, instead of failing.
type LostError struct {
	Step string
	Err  error
}

func (e *LostError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *LostError) Unwrap() error { return e.Err }

// Engine runs a workflow: the steps in order, each recorded in the run's
// checkpoint, and the counterparts of the changes made when anything fails.
type Engine[S State] struct {
	Steps []Step[S]
	// UndoTimeout bounds each counterpart run after a failure or interrupt,
	// under a context that the interrupt no longer cancels: every undo
	// action has its own deadline, so a slow clean-up cannot eat the time
	// the API needs to come back.
	UndoTimeout time.Duration
	// Retakes bounds how many times one run makes a lost change again (see
	// LostError); 0 means once.
	Retakes int
}

// Names returns the step names in order.
func (e *Engine[S]) Names() []string {
	names := make([]string, len(e.Steps))
	for i, s := range e.Steps {
		names[i] = s.Name
	}
	return names
}

// ValidateNames checks names (from --skip-steps) against the workflow.
func (e *Engine[S]) ValidateNames(names []string) error {
	for _, n := range names {
		if e.index(n) < 0 {
			return exitcode.Usagef("--skip-steps: unknown step %q; the steps are %s", n, strings.Join(e.Names(), ", "))
		}
	}
	return nil
}

func (e *Engine[S]) index(name string) int {
	for i := range e.Steps {
		if e.Steps[i].Name == name {
			return i
		}
	}
	return -1
}

func finished(st checkpoint.Status) bool { return st == checkpoint.Done || st == checkpoint.Skipped }

func started(st checkpoint.Status) bool {
	return st == checkpoint.Done || st == checkpoint.Failed || st == checkpoint.Running
}

func skipped[S State](s S, st *Step[S]) bool {
	return slices.Contains(s.SkipSteps(), st.Name) || (st.Skip != nil && st.Skip(s))
}

// Execute runs every step that is not done yet (so a resumed run continues
// from its first unfinished step, after making again the changes that step
// needs). When a step fails, or ctx is cancelled, it runs the counterpart of
// every change made, those that restore service first, each under a fresh
// context bounded by UndoTimeout, and returns the original error first with
// the undo errors joined after it, classified for the exit code:
// Precondition when nothing had been changed, Interrupted or Restored when
// every change was undone and recorded, ManualAction when one could not be
// undone or the undo could not be recorded.
func (e *Engine[S]) Execute(ctx context.Context, s S) error {
	run := s.Checkpoint()
	for _, st := range e.Steps {
		if run.Step(st.Name) == nil {
			return fmt.Errorf("run %s has no record of step %s", run.RunID, st.Name)
		}
	}
	e.reopen(run)
	retaken := map[string]int{}
	var failure error
	var failed string
steps:
	for i := 0; i < len(e.Steps); i++ {
		st := &e.Steps[i]
		rec := run.Step(st.Name)
		if finished(rec.Status) {
			continue
		}
		if skipped(s, st) {
			rec.Status = checkpoint.Skipped
			if err := s.Save(ctx); err != nil {
				failure, failed = fmt.Errorf("step %s: %w", st.Name, err), st.Name
				break
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			failure, failed = fmt.Errorf("before step %s: %w", st.Name, err), st.Name
			break
		}
		e.invalidate(run, st.Name)
		err := e.runStep(ctx, s, st)
		var lost *LostError
		if errors.As(err, &lost) && retaken[lost.Step] < max(1, e.Retakes) && e.index(lost.Step) >= 0 && e.index(lost.Step) < i && ctx.Err() == nil {
			// What this step needs is gone: make it again, and everything
			// that follows from it, as many times as Retakes allows.
			retaken[lost.Step]++
			charmlog.FromContext(ctx).Warn("making an earlier step's change again", "step", lost.Step, "because", lost.Err)
			rec.Status = checkpoint.Pending
			run.Step(lost.Step).Status = checkpoint.Undone
			e.reopen(run)
			i = -1
			continue steps
		}
		if err != nil {
			failure, failed = err, st.Name
			break
		}
	}
	if failure == nil {
		run.Finished = true
		if err := s.Save(context.WithoutCancel(ctx)); err != nil {
			return exitcode.New(exitcode.ManualAction, fmt.Errorf("every step is done, but the run could not be recorded as finished: %w; run '%s' to record it and release the lock", err, Command(run.Command, run.Cluster, "resume")))
		}
		return nil
	}
	return e.fail(ctx, s, failure, failed)
}

// reopen prepares the steps that must run again. A change that a step still
// to run needs goes back to pending, with its counterpart, when the
// counterpart has run since (the change is reverted, or may be: a failed
// scale-up may have brought some API servers back), or when the change is
// cheap to make again (Reapply). A step that goes back to pending may in
// turn need other changes, so this repeats until nothing moves.
func (e *Engine[S]) reopen(r *checkpoint.Run) {
	for changed := true; changed; {
		changed = false
		for oi := range e.Steps {
			opener := &e.Steps[oi]
			status := r.StatusOf(opener.Name)
			if status == checkpoint.Skipped || status == checkpoint.Pending || !e.neededLater(r, opener.Name) {
				continue
			}
			closer := e.counterpart(opener.Name)
			closerRan := closer != nil && r.StatusOf(closer.Name) != checkpoint.Pending && r.StatusOf(closer.Name) != checkpoint.Skipped
			if !closerRan && !(opener.Reapply && status == checkpoint.Done) {
				continue
			}
			r.Step(opener.Name).Status = checkpoint.Pending
			if closerRan {
				r.Step(closer.Name).Status = checkpoint.Pending
			}
			changed = true
		}
	}
}

// neededLater reports whether a step that needs name's change has still to
// run.
func (e *Engine[S]) neededLater(r *checkpoint.Run, name string) bool {
	for _, st := range e.Steps {
		if slices.Contains(st.Needs, name) && !finished(r.StatusOf(st.Name)) {
			return true
		}
	}
	return false
}

// counterpart returns the step that reverts name, or nil.
func (e *Engine[S]) counterpart(name string) *Step[S] {
	for i := range e.Steps {
		if e.Steps[i].Reverts == name {
			return &e.Steps[i]
		}
	}
	return nil
}

// invalidate marks pending every done step that used, directly or through
// another, the outputs of name, which is about to run again: what they made
// from the earlier outputs no longer matches.
func (e *Engine[S]) invalidate(r *checkpoint.Run, name string) {
	void := map[string]bool{name: true}
	for _, st := range e.Steps {
		for _, u := range st.Uses {
			if void[u] {
				void[st.Name] = true
				if r.StatusOf(st.Name) == checkpoint.Done {
					r.Step(st.Name).Status = checkpoint.Pending
				}
				break
			}
		}
	}
}

// runStep runs one step with its status recorded around it.
func (e *Engine[S]) runStep(ctx context.Context, s S, st *Step[S]) error {
	rec := s.Checkpoint().Step(st.Name)
	logger := charmlog.FromContext(ctx).With("step", st.Name)
	now := s.Clock()
	prev := *rec
	rec.Status, rec.StartedAt, rec.FinishedAt, rec.Error = checkpoint.Running, &now, nil, ""
	if err := s.Save(ctx); err != nil {
		// The step never started: it must not count as a change to undo
		// (a lost lock race must not unpause another run's cluster).
		*rec = prev
		return fmt.Errorf("step %s: %w", st.Name, err)
	}
	logger.Info(st.Summary)
	s.Emit(Event{MessageType: "step_started", Step: st.Name})
	err := st.Run(charmlog.WithContext(ctx, logger), s)
	end := s.Clock()
	rec.FinishedAt = &end
	if err != nil {
		rec.Status, rec.Error = checkpoint.Failed, err.Error()
		_ = s.Save(context.WithoutCancel(ctx))
		logger.Error("step failed", "err", err)
		s.Emit(Event{MessageType: "step_failed", Step: st.Name, Error: err.Error()})
		return fmt.Errorf("step %s: %w", st.Name, err)
	}
	rec.Status = checkpoint.Done
	if err := s.Save(context.WithoutCancel(ctx)); err != nil {
		// The end could not be recorded (a lock lost to another run right
		// after preflight): the step counts as failed, not done, so that
		// the failure's own save does not try to take the lock again.
		rec.Status, rec.Error = checkpoint.Failed, err.Error()
		return fmt.Errorf("step %s: %w", st.Name, err)
	}
	s.Emit(Event{MessageType: "step_done", Step: st.Name, Seconds: end.Sub(now).Seconds()})
	return nil
}

// runUndo runs a counterpart as an undo. Unlike runStep it runs even when its
// start cannot be recorded (a full state folder, a refused write of the
// lock): restoring the cluster matters more than the record, which is
// written afterwards as far as it can be. It returns the step's error and,
// apart, the error of recording it.
func (e *Engine[S]) runUndo(ctx context.Context, s S, st *Step[S]) (runErr, recErr error) {
	rec := s.Checkpoint().Step(st.Name)
	logger := charmlog.FromContext(ctx).With("step", st.Name)
	now := s.Clock()
	rec.Status, rec.StartedAt, rec.FinishedAt, rec.Error = checkpoint.Running, &now, nil, ""
	if err := s.Save(ctx); err != nil {
		recErr = err
		logger.Warn("could not record the start of the undo; undoing anyway", "err", err)
	}
	s.Emit(Event{MessageType: "step_started", Step: st.Name})
	runErr = st.Run(charmlog.WithContext(ctx, logger), s)
	end := s.Clock()
	rec.FinishedAt = &end
	if runErr != nil {
		rec.Status, rec.Error = checkpoint.Failed, runErr.Error()
		logger.Error("undo failed", "err", runErr)
		s.Emit(Event{MessageType: "step_failed", Step: st.Name, Error: runErr.Error()})
		return fmt.Errorf("step %s: %w", st.Name, runErr), recErr
	}
	rec.Status = checkpoint.Done
	s.Emit(Event{MessageType: "step_done", Step: st.Name, Seconds: end.Sub(now).Seconds()})
	return nil, recErr
}

// undoAction is a counterpart to run for a change that was made.
type undoAction[S State] struct{ orig, undo *Step[S] }

// fail undoes what the run changed and classifies the failure.
func (e *Engine[S]) fail(ctx context.Context, s S, failure error, failed string) error {
	run := s.Checkpoint()
	logger := charmlog.FromContext(ctx)

	changed := false
	var actions []undoAction[S]
	// Walk the steps backwards; every step that started (done, failed or
	// still marked running) and has a counterpart not yet done gets it.
	for i := len(e.Steps) - 1; i >= 0; i-- {
		orig := &e.Steps[i]
		if !started(run.StatusOf(orig.Name)) {
			continue
		}
		if !orig.ReadOnly {
			changed = true
		}
		if undo := e.counterpart(orig.Name); undo != nil && run.StatusOf(undo.Name) != checkpoint.Done {
			actions = append(actions, undoAction[S]{orig, undo})
		}
	}
	// Service first: the API comes back before anything is cleaned up.
	slices.SortStableFunc(actions, func(a, b undoAction[S]) int {
		switch {
		case a.undo.RestoresService == b.undo.RestoresService:
			return 0
		case a.undo.RestoresService:
			return -1
		default:
			return 1
		}
	})
	var undoErrs []error
	for _, a := range actions {
		logger.Warn("undoing", "step", a.undo.Name, "reverts", a.orig.Name)
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.undoTimeout())
		err, recErr := e.runUndo(actx, s, a.undo)
		cancel()
		if recErr != nil {
			logger.Warn("could not record the undo", "step", a.undo.Name, "err", recErr)
		}
		if err != nil {
			undoErrs = append(undoErrs, fmt.Errorf("undo: %w", err))
			continue
		}
		if run.StatusOf(a.orig.Name) == checkpoint.Done && !e.neededLater(run, a.orig.Name) {
			// Every step that needed the change has finished: its product
			// lives on (the snapshot is in the bucket), so a resumed run
			// does not make it again. The counterpart ran at its own place.
			continue
		}
		// The counterpart ran as an undo; a resumed run must perform both
		// again, in order.
		run.Step(a.orig.Name).Status = checkpoint.Undone
		run.Step(a.undo.Name).Status = checkpoint.Undone
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.undoTimeout())
	recordErr := s.Save(rctx)
	cancel()
	all := errors.Join(append([]error{failure}, undoErrs...)...)
	resume := Command(run.Command, run.Cluster, "resume")
	restored := fmt.Errorf("%w; every change was undone: fix the cause, then run '%s' to retry run %s, or start a new backup",
		all, resume, run.RunID)
	switch {
	case len(undoErrs) > 0:
		if recordErr != nil {
			all = errors.Join(all, fmt.Errorf("record the undo: %w", recordErr))
		}
		return exitcode.New(exitcode.ManualAction, fmt.Errorf("%w; the cluster may be left changed: fix the cause and run '%s' to finish run %s, or undo its changes by hand and release the cluster with '%s'",
			all, resume, run.RunID, Command(run.Command, run.Cluster, "abandon")))
	case recordErr != nil && changed:
		return exitcode.New(exitcode.ManualAction, fmt.Errorf("%w; every change was undone, but the run could not be recorded (%w), so its lock stays: fix the cause and run '%s' to finish run %s",
			all, recordErr, resume, run.RunID))
	case exitcode.Of(failure) == exitcode.Usage || exitcode.Of(failure) == exitcode.Precondition:
		if !changed {
			return failure
		}
		return exitcode.New(exitcode.Restored, restored)
	case errors.Is(failure, context.Canceled) || ctx.Err() != nil:
		return exitcode.New(exitcode.Interrupted, fmt.Errorf("interrupted during %s; every change was undone: %w", failed, all))
	case !changed:
		return exitcode.New(exitcode.Precondition, all)
	default:
		return exitcode.New(exitcode.Restored, restored)
	}
}

// Command is the hcpsnap command line that acts on a run of cmd on cluster c
// with one more flag (--resume, --abandon), quoted for a shell, as error
// messages suggest it.
func Command(cmd string, c checkpoint.Cluster, flag string) string {
	return shell.Join("hcpsnap", cmd, "--cluster", c.Name, "--namespace", c.Namespace, "--"+flag)
}

func (e *Engine[S]) undoTimeout() time.Duration {
	if e.UndoTimeout > 0 {
		return e.UndoTimeout
	}
	return 5 * time.Minute
}
