package runbook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Entry is one step of the runbook.
type Entry struct {
	Number   int      `json:"number"`
	Step     string   `json:"step"`
	Summary  string   `json:"summary"`
	Skipped  bool     `json:"skipped,omitempty"`
	Reverts  string   `json:"reverts,omitempty"`
	Actions  []string `json:"actions,omitempty"`
	Commands []string `json:"commands,omitempty"`
}

// Header says what the runbook is for.
type Header struct {
	Title   string `json:"title"`
	Cluster string `json:"cluster"`
	Mode    string `json:"mode"`
	RunID   string `json:"runID"`
}

// Build asks every step for its plan, in order. A plan that fails (the
// cluster is missing, a pod is not ready) stops the runbook with that error,
// as the run itself would stop at preflight.
func Build[S State](ctx context.Context, workflow []Step[S], s S) ([]Entry, error) {
	var entries []Entry
	for i, st := range workflow {
		e := Entry{Number: i + 1, Step: st.Name, Summary: st.Summary, Reverts: st.Reverts}
		if slices.Contains(s.SkipSteps(), st.Name) || (st.Skip != nil && st.Skip(s)) {
			e.Skipped = true
			entries = append(entries, e)
			continue
		}
		p, err := st.Plan(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("step %s: %w", st.Name, err)
		}
		e.Actions, e.Commands = p.Actions, p.Commands
		entries = append(entries, e)
	}
	return entries, nil
}

// undoNote is printed under a step whose counterpart runs after a failure.
func undoNote(entries []Entry, e Entry) string {
	for _, other := range entries {
		if other.Reverts == e.Step && !other.Skipped {
			return fmt.Sprintf("if anything fails after this step, or on Ctrl-C, %s (step %d) runs to undo it", other.Step, other.Number)
		}
	}
	return ""
}

// WriteText renders the runbook for a terminal.
func WriteText(w io.Writer, h Header, entries []Entry) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\ncluster: %s   mode: %s   run: %s\nDry run: nothing was changed. A real run performs these steps:\n\n", h.Title, h.Cluster, h.Mode, h.RunID)
	for _, e := range entries {
		if e.Skipped {
			fmt.Fprintf(&b, "%2d. %s (skipped)\n\n", e.Number, e.Step)
			continue
		}
		fmt.Fprintf(&b, "%2d. %s — %s\n", e.Number, e.Step, e.Summary)
		for _, a := range e.Actions {
			fmt.Fprintf(&b, "      - %s\n", a)
		}
		if note := undoNote(entries, e); note != "" {
			fmt.Fprintf(&b, "      ! %s\n", note)
		}
		for _, c := range e.Commands {
			fmt.Fprintf(&b, "      $ %s\n", c)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown renders the runbook as a review document.
func WriteMarkdown(w io.Writer, h Header, entries []Entry) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n| cluster | mode | run |\n| --- | --- | --- |\n| `%s` | %s | `%s` |\n\n", h.Title, h.Cluster, h.Mode, h.RunID)
	b.WriteString("Dry run: nothing was changed. A real run performs these steps in order; every change is recorded\nbefore it is made and undone if a later step fails or the run is interrupted.\n\n")
	for _, e := range entries {
		if e.Skipped {
			fmt.Fprintf(&b, "## %d. `%s` (skipped)\n\n", e.Number, e.Step)
			continue
		}
		fmt.Fprintf(&b, "## %d. `%s`\n\n%s\n\n", e.Number, e.Step, e.Summary)
		for _, a := range e.Actions {
			fmt.Fprintf(&b, "- %s\n", a)
		}
		if note := undoNote(entries, e); note != "" {
			fmt.Fprintf(&b, "- **Undo:** %s\n", note)
		}
		if len(e.Commands) > 0 {
			b.WriteString("\n```sh\n")
			for _, c := range e.Commands {
				b.WriteString(c + "\n")
			}
			b.WriteString("```\n")
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON renders the runbook as one JSON object per step (NDJSON), after
// a header object, each with a message_type.
func WriteJSON(w io.Writer, h Header, entries []Entry) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(struct {
		MessageType string `json:"message_type"`
		Header
	}{"runbook", h}); err != nil {
		return err
	}
	for _, e := range entries {
		if err := enc.Encode(struct {
			MessageType string `json:"message_type"`
			Entry
		}{"runbook_step", e}); err != nil {
			return err
		}
	}
	return nil
}
