package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hcpsnap/hcpsnap/checkpoint"
)

// State is the one value every step receives: what the user asked for, the
// clients, the run's checkpoint and the outputs recorded so far.
type State struct {
	Opts    Options
	Clients Clients
	// Run is the checkpoint; Out is its typed outputs, serialised into
	// Run.Outputs on every Save.
	Run *checkpoint.Run
	Out *Outputs
	// Saver persists the checkpoint (run file and cluster annotation).
	Saver Saver
	// Events receives progress events for the -o json stream; may be nil.
	Events func(Event)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Saver persists a run's checkpoint. Save is called before every change a
// step makes, so that an undo or a resume always knows the original value.
type Saver interface {
	Save(ctx context.Context, run *checkpoint.Run) error
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

// Save records the outputs in the checkpoint and persists it.
func (s *State) Save(ctx context.Context) error {
	out, err := json.Marshal(s.Out)
	if err != nil {
		return err
	}
	s.Run.Outputs = out
	s.Run.Serial++
	s.Run.UpdatedAt = s.now().UTC()
	if s.Saver == nil {
		return nil
	}
	if err := s.Saver.Save(ctx, s.Run); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

func (s *State) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *State) emit(e Event) {
	if s.Events != nil {
		s.Events(e)
	}
}

func (s *State) skipped(st *Step) bool {
	for _, n := range s.Opts.SkipSteps {
		if n == st.Name {
			return true
		}
	}
	return st.Skip != nil && st.Skip(s)
}

// LoadOutputs decodes a checkpoint's outputs, for a resumed run.
func LoadOutputs(run *checkpoint.Run) (*Outputs, error) {
	out := &Outputs{}
	if len(run.Outputs) == 0 {
		return out, nil
	}
	if err := json.Unmarshal(run.Outputs, out); err != nil {
		return nil, fmt.Errorf("run %s: outputs: %w", run.RunID, err)
	}
	return out, nil
}
