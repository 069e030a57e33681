package checkpoint

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// SchemaVersion is the version of the run file format this build writes and
// the newest it reads.
const SchemaVersion = 1

// Status is the state of one step in a run.
type Status string

// Step statuses. A step is "running" from just before it starts until it
// ends; a run file that says "running" therefore belongs to a process that
// died in that step.
const (
	Pending Status = "pending"
	Running Status = "running"
	Done    Status = "done"
	Failed  Status = "failed"
	Skipped Status = "skipped"
	// Undone: the step's change was reverted by its counterpart after a
	// failure; a resumed run performs it again.
	Undone Status = "undone"
)

// Cluster identifies the HostedCluster a run belongs to. The UID tells a
// re-created cluster of the same name from the original.
type Cluster struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
}

// String renders the cluster as namespace/name.
func (c Cluster) String() string { return c.Namespace + "/" + c.Name }

// StepRecord is the status of one step.
type StepRecord struct {
	Name       string     `json:"name"`
	Status     Status     `json:"status"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// Run is the whole run file. Outputs is owned by the command that runs the
// steps (for backup, steps.Outputs), kept as raw JSON here so that this
// package stays independent of it.
type Run struct {
	SchemaVersion int       `json:"schemaVersion"`
	RunID         string    `json:"runID"`
	Serial        int64     `json:"serial"`
	Command       string    `json:"command"`
	Cluster       Cluster   `json:"cluster"`
	Host          string    `json:"host,omitempty"`
	StartedAt     time.Time `json:"startedAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
	Finished      bool      `json:"finished"`
	// Abandoned: a person released the run's lock with --abandon, leaving
	// what it had not undone to be fixed by hand; it is never resumed.
	Abandoned bool            `json:"abandoned,omitempty"`
	Steps     []StepRecord    `json:"steps"`
	Options   json.RawMessage `json:"options,omitempty"`
	Outputs   json.RawMessage `json:"outputs,omitempty"`
}

// New returns a run of command on cluster with every step pending.
func New(command string, cluster Cluster, host string, stepNames []string, now time.Time) *Run {
	r := &Run{
		SchemaVersion: SchemaVersion,
		RunID:         newRunID(now),
		Command:       command,
		Cluster:       cluster,
		Host:          host,
		StartedAt:     now.UTC(),
		UpdatedAt:     now.UTC(),
	}
	for _, n := range stepNames {
		r.Steps = append(r.Steps, StepRecord{Name: n, Status: Pending})
	}
	return r
}

// runIDPattern is the only shape of a run ID: it names files on this machine
// and in the etcd pod, so one read back from a file or an annotation is
// checked against it before any use.
var runIDPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)

// ValidRunID reports whether id has the shape newRunID gives.
func ValidRunID(id string) bool { return runIDPattern.MatchString(id) }

// Active reports whether the run may still be resumed: neither finished
// nor abandoned.
func (r *Run) Active() bool { return !r.Finished && !r.Abandoned }

// newRunID returns a sortable, unique run ID: UTC time plus 4 random bytes.
func newRunID(now time.Time) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// Step returns the record of the named step, or nil.
func (r *Run) Step(name string) *StepRecord {
	for i := range r.Steps {
		if r.Steps[i].Name == name {
			return &r.Steps[i]
		}
	}
	return nil
}

// StatusOf returns the status of the named step (Pending when unknown).
func (r *Run) StatusOf(name string) Status {
	if s := r.Step(name); s != nil {
		return s.Status
	}
	return Pending
}

// Validate checks a run read from a file or an annotation against the
// cluster the caller is about to work on. Its errors name the run and say
// what to do; they never include secret values (a run holds none).
func (r *Run) Validate(command string, cluster Cluster) error {
	id := OneLine(r.RunID)
	switch {
	case r.SchemaVersion > SchemaVersion:
		return fmt.Errorf("run %s has schema version %d, newer than this hcpsnap reads (%d): finish it with a newer hcpsnap", id, r.SchemaVersion, SchemaVersion)
	case r.SchemaVersion < 1:
		return fmt.Errorf("run file has no schemaVersion: it is not an hcpsnap run file")
	case r.RunID == "":
		return errors.New("run file has no runID: it is not an hcpsnap run file")
	case r.Command != command:
		return fmt.Errorf("run %s is a %q run, not %q", id, r.Command, command)
	case r.Cluster.Namespace != cluster.Namespace || r.Cluster.Name != cluster.Name:
		return fmt.Errorf("run %s belongs to cluster %s, not %s: pass the matching --cluster/--namespace or start a new run", id, OneLine(r.Cluster.String()), OneLine(cluster.String()))
	case cluster.UID != "" && r.Cluster.UID != "" && r.Cluster.UID != cluster.UID:
		return fmt.Errorf("run %s belongs to an earlier cluster %s (uid %s, now %s): it was deleted and re-created; start a new run", id, OneLine(r.Cluster.String()), OneLine(r.Cluster.UID), OneLine(cluster.UID))
	}
	return nil
}

// OneLine returns s as it is when it prints on one line, and quoted when it
// holds a line break or another character that is not printable: a run file
// or annotation edited by hand or by someone else must not add or forge
// lines in the log.
func OneLine(s string) string {
	if Printable(s) {
		return s
	}
	return strconv.Quote(s)
}

// Printable reports whether s holds only printable characters: no line
// break or control character that could forge a line in a log or a path.
func Printable(s string) bool {
	return strings.IndexFunc(s, func(c rune) bool { return !unicode.IsPrint(c) }) < 0
}

// Decode parses and sanity-checks a run file's bytes.
func Decode(data []byte) (*Run, error) {
	var r Run
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("not a valid run file: %w", err)
	}
	if r.SchemaVersion > SchemaVersion {
		return nil, fmt.Errorf("run %s has schema version %d, newer than this hcpsnap reads (%d): finish it with a newer hcpsnap", OneLine(r.RunID), r.SchemaVersion, SchemaVersion)
	}
	if r.SchemaVersion < 1 || r.RunID == "" {
		return nil, errors.New("not an hcpsnap run file: schemaVersion or runID missing")
	}
	if !ValidRunID(r.RunID) {
		return nil, fmt.Errorf("run ID %s is not of the form 20060102T150405Z-0a1b2c3d: the run was edited or not written by hcpsnap", strconv.Quote(r.RunID))
	}
	return &r, nil
}

// CheckSteps refuses a run whose step records are not exactly names, in
// order, each with a known status: a run read back from a file or an
// annotation must describe the workflow this build runs.
func (r *Run) CheckSteps(names []string) error {
	id := OneLine(r.RunID)
	if len(r.Steps) != len(names) {
		return fmt.Errorf("run %s records %d steps, this hcpsnap has %d: finish it with the hcpsnap that started it", id, len(r.Steps), len(names))
	}
	for i, st := range r.Steps {
		if st.Name != names[i] {
			return fmt.Errorf("run %s records step %s where this hcpsnap has %s: finish it with the hcpsnap that started it", id, strconv.Quote(st.Name), names[i])
		}
		switch st.Status {
		case Pending, Running, Done, Failed, Skipped, Undone:
		default:
			return fmt.Errorf("run %s: step %s has the unknown status %s", id, names[i], strconv.Quote(string(st.Status)))
		}
	}
	return nil
}
