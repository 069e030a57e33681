package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/runbook"
)

// The backup workflow runs on the engine of package runbook, instantiated
// with this package's State.
type (
	// Step is one step of the backup workflow.
	Step = runbook.Step[*State]
	// Engine runs the backup workflow.
	Engine = runbook.Engine[*State]
	// Plan is a step's entry in the --dry-run runbook.
	Plan = runbook.Plan
	// Event is one line of the NDJSON stream printed with -o json.
	Event = runbook.Event
)

var _ runbook.State = (*State)(nil)

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

	// stream is the snapshot stream this process has open (--via stream).
	stream *liveStream

	// parent is set on a view of the state for one etcd shard (onShard):
	// Opts.Member is the shard's pod and Out.Attempt its attempt, and Save
	// records the attempt in the parent's outputs before saving them.
	parent *State
	shard  int
}

// onShard returns a view of s on which the exec path's snapshot functions
// act on etcd shard i: its member's pod, its attempt, its object
// (manifest.ShardSnapshotObject). The view shares the checkpoint: its Save
// saves the parent's outputs with the shard's attempt in them.
func (s *State) onShard(i int) *State {
	sh := &s.Out.Shards[i]
	v := *s
	v.Opts.Member = sh.Pod
	out := *s.Out
	out.Attempt, out.EtcdDBSize = sh.Attempt, sh.DBSize
	v.Out, v.parent, v.shard, v.stream = &out, s, i, nil
	return &v
}

// sync copies what a shard's view recorded back into the parent's outputs.
func (s *State) sync() {
	if s.parent == nil {
		return
	}
	sh := &s.parent.Out.Shards[s.shard]
	sh.Attempt, sh.DBSize = s.Out.Attempt, s.Out.EtcdDBSize
	if s.parent.Out.StatusTool == "" {
		s.parent.Out.StatusTool = s.Out.StatusTool
	}
}

// snapshotObject is the name of the object the (shard's) snapshot goes to.
func (s *State) snapshotObject() string {
	if s.parent != nil {
		return manifest.ShardSnapshotObject(s.parent.Out.Shards[s.shard].Shard.Name)
	}
	return snapshotObjectName
}

// eachShard runs fn on the view of every shard in order, recording what it
// did; it stops at the first error, which names the shard.
func (s *State) eachShard(ctx context.Context, fn func(context.Context, *State) error) error {
	for i := range s.Out.Shards {
		if err := s.eachShardAt(ctx, i, fn); err != nil {
			return err
		}
	}
	return nil
}

// eachShardAt runs fn on the view of shard i, recording what it did.
func (s *State) eachShardAt(ctx context.Context, i int, fn func(context.Context, *State) error) error {
	v := s.onShard(i)
	err := fn(ctx, v)
	v.sync()
	if err != nil {
		return fmt.Errorf("etcd shard %s: %w", s.Out.Shards[i].Shard.Name, err)
	}
	return nil
}

// Saver persists a run's checkpoint. Save is called before every change a
// step makes, so that an undo or a resume always knows the original value.
type Saver interface {
	Save(ctx context.Context, run *checkpoint.Run) error
}

// Save records the outputs in the checkpoint and persists it.
func (s *State) Save(ctx context.Context) error {
	if s.parent != nil {
		s.sync()
		return s.parent.Save(ctx)
	}
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

// Checkpoint returns the run's checkpoint, for the engine.
func (s *State) Checkpoint() *checkpoint.Run { return s.Run }

// Emit reports a progress event, for the engine.
func (s *State) Emit(e Event) { s.emit(e) }

// Clock returns the current time, for the engine.
func (s *State) Clock() time.Time { return s.now() }

// SkipSteps returns the steps the user left out, for the engine.
func (s *State) SkipSteps() []string { return s.Opts.SkipSteps }

// LoadOutputs decodes a checkpoint's outputs, for a resumed run.
func LoadOutputs(run *checkpoint.Run) (*Outputs, error) {
	out := &Outputs{}
	if len(run.Outputs) == 0 {
		return out, nil
	}
	if err := json.Unmarshal(run.Outputs, out); err != nil {
		return nil, fmt.Errorf("run %s: outputs: %w", run.RunID, err)
	}
	if out.Attempt == nil {
		// A run file of an earlier hcpsnap kept the attempt's outputs flat.
		var old legacyAttempt
		if err := json.Unmarshal(run.Outputs, &old); err != nil {
			return nil, fmt.Errorf("run %s: outputs: %w", run.RunID, err)
		}
		if old.SnapshotID != "" {
			out.Attempt = &Attempt{ID: old.SnapshotID, Path: old.SnapshotPath, SavedAt: old.SnapshotSaveAt,
				Bytes: old.SnapshotBytes, EtcdSHA256: old.EtcdSHA256, SHA256: old.SHA256, ObjectKey: old.ObjectKey,
				UploadID: old.UploadID, UploadReused: old.UploadReused, UploadStart: old.UploadStart,
				UploadEnd: old.UploadEnd, Status: old.Snapshot}
		}
	}
	return out, nil
}

// legacyAttempt is how run files written before Attempt existed recorded
// the snapshot attempt's outputs.
type legacyAttempt struct {
	SnapshotPath   string          `json:"snapshotPath"`
	SnapshotID     string          `json:"snapshotID"`
	Snapshot       *SnapshotStatus `json:"snapshot"`
	SnapshotBytes  int64           `json:"snapshotBytes"`
	EtcdSHA256     string          `json:"etcdSHA256"`
	SHA256         string          `json:"sha256"`
	ObjectKey      string          `json:"objectKey"`
	UploadID       string          `json:"uploadID"`
	UploadReused   bool            `json:"uploadReused"`
	UploadStart    *time.Time      `json:"uploadStart"`
	UploadEnd      *time.Time      `json:"uploadEnd"`
	SnapshotSaveAt *time.Time      `json:"snapshotSavedAt"`
}

// downtimes returns every closed window of API downtime, in order.
func (o *Outputs) downtimes() []Window {
	ws := slices.Clone(o.EarlierDowntimes)
	if o.DowntimeStart != nil && o.DowntimeEnd != nil {
		ws = append(ws, Window{Start: *o.DowntimeStart, End: *o.DowntimeEnd})
	}
	return ws
}
