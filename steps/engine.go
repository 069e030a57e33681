package steps

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	charmlog "github.com/charmbracelet/log"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// Step is one line of a runbook: a plain value, so that the same list drives
// the run, the checkpoint, --skip-steps, --help and the --dry-run runbook.
type Step struct {
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
	// Skip reports whether the options leave this step out (--online).
	Skip func(*State) bool
	// Run performs the step. It converges on a target state, so running it
	// again after a crash is harmless.
	Run func(context.Context, *State) error
	// Plan describes, for a dry run, what Run would do with the real values
	// read from the cluster; it must not change anything.
	Plan func(context.Context, *State) (Plan, error)
}

// Plan is a step's entry in the --dry-run runbook.
type Plan struct {
	// Actions say in words what the step would do, with real values.
	Actions []string `json:"actions"`
	// Commands are what a person could run by hand to do the same.
	Commands []string `json:"commands,omitempty"`
}

// Engine runs a workflow: the steps in order, each recorded in the run's
// checkpoint, and the counterparts of the changes made when anything fails.
type Engine struct {
	Steps []Step
	// UndoTimeout bounds the undo after a failure or interrupt, which runs
	// under a context that the interrupt no longer cancels.
	UndoTimeout time.Duration
}

// Names returns the step names in order.
func (e *Engine) Names() []string {
	names := make([]string, len(e.Steps))
	for i, s := range e.Steps {
		names[i] = s.Name
	}
	return names
}

// ValidateNames checks names (from --skip-steps) against the workflow.
func (e *Engine) ValidateNames(names []string) error {
	known := map[string]bool{}
	for _, s := range e.Steps {
		known[s.Name] = true
	}
	for _, n := range names {
		if !known[n] {
			return exitcode.Usagef("--skip-steps: unknown step %q; the steps are %s", n, strings.Join(e.Names(), ", "))
		}
	}
	return nil
}

func (e *Engine) step(name string) *Step {
	for i := range e.Steps {
		if e.Steps[i].Name == name {
			return &e.Steps[i]
		}
	}
	return nil
}

// Execute runs every step that is not done yet (so a resumed run continues
// from its first unfinished step). When a step fails, or ctx is cancelled,
// it runs the counterpart of every change made, most recent first, under a
// fresh context bounded by UndoTimeout, and returns the original error first
// with the undo errors joined after it, classified for the exit code:
// Precondition when nothing had been changed, Interrupted or Restored when
// every change was undone, ManualAction when one could not be.
func (e *Engine) Execute(ctx context.Context, s *State) error {
	e.reopenBrackets(s.Run)
	var failure error
	var failed string
	for i := range e.Steps {
		st := &e.Steps[i]
		rec := s.Run.Step(st.Name)
		if rec == nil {
			return fmt.Errorf("run %s has no record of step %s", s.Run.RunID, st.Name)
		}
		if rec.Status == checkpoint.Done || rec.Status == checkpoint.Skipped {
			continue
		}
		if s.skipped(st) {
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
		if err := e.runStep(ctx, s, st); err != nil {
			failure, failed = err, st.Name
			break
		}
	}
	if failure == nil {
		s.Run.Finished = true
		return s.Save(context.WithoutCancel(ctx))
	}
	return e.fail(ctx, s, failure, failed)
}

// reopenBrackets prepares a resumed run. A step that must run again inside
// a bracket that has since been closed (snapshot-save after scale-up and
// resume ran as its undo) needs the bracket opened again: the opening and
// closing steps go back to pending, so the run pauses and scales down again
// before it snapshots.
func (e *Engine) reopenBrackets(r *checkpoint.Run) {
	first := -1
	for i, st := range e.Steps {
		if status := r.StatusOf(st.Name); status != checkpoint.Done && status != checkpoint.Skipped {
			first = i
			break
		}
	}
	if first < 0 {
		return
	}
	for closeIdx, closer := range e.Steps {
		if closer.Reverts == "" || closeIdx <= first {
			continue
		}
		for openIdx, opener := range e.Steps {
			if opener.Name != closer.Reverts || openIdx >= first {
				continue
			}
			if r.StatusOf(closer.Name) == checkpoint.Done || r.StatusOf(closer.Name) == checkpoint.Undone {
				r.Step(opener.Name).Status = checkpoint.Pending
				r.Step(closer.Name).Status = checkpoint.Pending
			}
		}
	}
}

// runStep runs one step with its status recorded around it.
func (e *Engine) runStep(ctx context.Context, s *State, st *Step) error {
	rec := s.Run.Step(st.Name)
	logger := charmlog.FromContext(ctx).With("step", st.Name)
	now := s.now()
	prev := *rec
	rec.Status, rec.StartedAt, rec.FinishedAt, rec.Error = checkpoint.Running, &now, nil, ""
	if err := s.Save(ctx); err != nil {
		// The step never started: it must not count as a change to undo
		// (a lost lock race must not unpause another run's cluster).
		*rec = prev
		return fmt.Errorf("step %s: %w", st.Name, err)
	}
	logger.Info(st.Summary)
	s.emit(Event{MessageType: "step_started", Step: st.Name})
	err := st.Run(charmlog.WithContext(ctx, logger), s)
	end := s.now()
	rec.FinishedAt = &end
	if err != nil {
		rec.Status, rec.Error = checkpoint.Failed, err.Error()
		_ = s.Save(context.WithoutCancel(ctx))
		logger.Error("step failed", "err", err)
		s.emit(Event{MessageType: "step_failed", Step: st.Name, Error: err.Error()})
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
	s.emit(Event{MessageType: "step_done", Step: st.Name, Seconds: end.Sub(now).Seconds()})
	return nil
}

// fail undoes what the run changed and classifies the failure.
func (e *Engine) fail(ctx context.Context, s *State, failure error, failed string) error {
	undoCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.undoTimeout())
	defer cancel()
	logger := charmlog.FromContext(ctx)

	changed := false
	var undoErrs []error
	// Walk the steps backwards; every step that started (done, failed or
	// still marked running) and has a counterpart not yet done gets it.
	for i := len(e.Steps) - 1; i >= 0; i-- {
		orig := &e.Steps[i]
		status := s.Run.StatusOf(orig.Name)
		started := status == checkpoint.Done || status == checkpoint.Failed || status == checkpoint.Running
		if !started {
			continue
		}
		if !orig.ReadOnly {
			changed = true
		}
		for j := range e.Steps {
			undo := &e.Steps[j]
			if undo.Reverts != orig.Name || s.Run.StatusOf(undo.Name) == checkpoint.Done {
				continue
			}
			logger.Warn("undoing", "step", undo.Name, "reverts", orig.Name)
			if err := e.runStep(undoCtx, s, undo); err != nil {
				undoErrs = append(undoErrs, fmt.Errorf("undo: %w", err))
				continue
			}
			s.Run.Step(orig.Name).Status = checkpoint.Undone
			// The counterpart ran as an undo; a resumed run must perform
			// both again, in order.
			s.Run.Step(undo.Name).Status = checkpoint.Undone
		}
	}
	if err := s.Save(undoCtx); err != nil {
		undoErrs = append(undoErrs, fmt.Errorf("record the undo: %w", err))
	}
	all := errors.Join(append([]error{failure}, undoErrs...)...)
	restored := fmt.Errorf("%w; every change was undone: fix the cause, then run '%s' to retry run %s, or start a new backup",
		all, BackupCommand(s.Run.Cluster, "resume"), s.Run.RunID)
	switch {
	case len(undoErrs) > 0:
		return exitcode.New(exitcode.ManualAction, fmt.Errorf("%w; the cluster may be left changed: fix the cause and run '%s' to finish run %s, or undo its changes by hand and release the cluster with '%s'",
			all, BackupCommand(s.Run.Cluster, "resume"), s.Run.RunID, BackupCommand(s.Run.Cluster, "abandon")))
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

func (e *Engine) undoTimeout() time.Duration {
	if e.UndoTimeout > 0 {
		return e.UndoTimeout
	}
	return 5 * time.Minute
}
