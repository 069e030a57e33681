package command

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/hcpsnap/hcpsnap/steps"
)

// reporter turns a run's events into output: NDJSON on stdout with -o json,
// otherwise a progress bar for the upload on a terminal's stderr and a
// readable summary on stdout at the end.
type reporter struct {
	format string
	out    io.Writer
	errOut io.Writer
	tty    bool

	// cluster, when set, names the cluster of every event line: a fleet
	// backup writes the events of several runs to one stdout.
	cluster string
	// onSummary, when set, receives the summary of the run instead of the
	// text summary on stdout (the fleet prints one table at the end); with
	// -o json the summary line is still written.
	onSummary func(Summary)

	mu       *sync.Mutex
	enc      *json.Encoder
	lastDraw time.Time
}

func newReporter(format string, out, errOut io.Writer) *reporter {
	r := &reporter{format: format, out: out, errOut: errOut, enc: json.NewEncoder(out), mu: &sync.Mutex{}}
	if f, ok := errOut.(*os.File); ok {
		r.tty = isatty.IsTerminal(f.Fd())
	}
	return r
}

func (r *reporter) event(e steps.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.format == OutputJSON {
		if r.cluster != "" {
			_ = r.enc.Encode(clusterEvent{Event: e, Cluster: r.cluster})
			return
		}
		_ = r.enc.Encode(e)
		return
	}
	if !r.tty || r.cluster != "" || e.MessageType != "upload_progress" || e.BytesTotal <= 0 {
		return
	}
	if time.Since(r.lastDraw) < 200*time.Millisecond && e.BytesDone < e.BytesTotal {
		return
	}
	r.lastDraw = time.Now()
	const width = 30
	frac := float64(e.BytesDone) / float64(e.BytesTotal)
	if frac > 1 {
		frac = 1
	}
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < filled {
			bar[i] = '='
		}
	}
	fmt.Fprintf(r.errOut, "\rupload [%s] %3.0f%% %d/%d MiB", bar, frac*100, e.BytesDone>>20, e.BytesTotal>>20)
	if e.BytesDone >= e.BytesTotal {
		fmt.Fprintln(r.errOut)
	}
}

// clusterEvent is an event of one run of a fleet: the event's fields and
// the cluster it belongs to.
type clusterEvent struct {
	steps.Event
	Cluster string `json:"cluster"`
}

// Summary is the result of a backup, printed at the end.
type Summary struct {
	MessageType     string  `json:"message_type"`
	Cluster         string  `json:"cluster"`
	RunID           string  `json:"runID"`
	Snapshot        string  `json:"snapshot"`
	Manifest        string  `json:"manifest"`
	KeyBundle       string  `json:"keyBundle"`
	Bytes           int64   `json:"bytes"`
	SHA256          string  `json:"sha256"`
	Revision        int64   `json:"revision"`
	TotalKeys       int64   `json:"totalKeys"`
	DowntimeSeconds float64 `json:"downtimeSeconds"`
	UploadReused    bool    `json:"uploadReused,omitempty"`
	Online          bool    `json:"online,omitempty"`
	// Shards are the etcd shard snapshots of the backup.
	Shards []ShardSummary `json:"shards,omitempty"`
}

// ShardSummary is one etcd shard's snapshot in a backup's Summary.
type ShardSummary struct {
	Shard     string `json:"shard"`
	Snapshot  string `json:"snapshot"`
	Bytes     int64  `json:"bytes"`
	Revision  int64  `json:"revision"`
	TotalKeys int64  `json:"totalKeys"`
}

func (r *reporter) summary(s *steps.State) error {
	m := steps.BuildManifest(s)
	sum := Summary{
		MessageType:     "summary",
		Cluster:         m.Namespace + "/" + m.Cluster,
		RunID:           m.RunID,
		Snapshot:        "s3://" + s.Opts.Bucket + "/" + m.Snapshot.Key,
		Manifest:        "s3://" + s.Opts.Bucket + "/" + s.Out.ManifestKey,
		Bytes:           m.Snapshot.Size,
		SHA256:          m.Snapshot.SHA256,
		Revision:        m.Etcd.Revision,
		TotalKeys:       m.Etcd.TotalKeys,
		DowntimeSeconds: m.DowntimeSeconds,
		UploadReused:    s.Out.Attempt != nil && s.Out.Attempt.UploadReused,
		Online:          s.Opts.Online,
	}
	for _, sh := range m.Shards {
		sum.Shards = append(sum.Shards, ShardSummary{Shard: sh.Name, Snapshot: "s3://" + s.Opts.Bucket + "/" + sh.Snapshot.Key,
			Bytes: sh.Snapshot.Size, Revision: sh.Etcd.Revision, TotalKeys: sh.Etcd.TotalKeys})
	}
	switch {
	case s.Out.KeyBundleFile != "":
		sum.KeyBundle = s.Out.KeyBundleFile
	case s.Out.KeyBundleKey != "":
		sum.KeyBundle = "s3://" + s.Opts.Bucket + "/" + s.Out.KeyBundleKey
	}
	if r.onSummary != nil {
		r.onSummary(sum)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.format == OutputJSON {
		return r.enc.Encode(sum)
	}
	if r.onSummary != nil {
		return nil
	}
	downtime := fmt.Sprintf("%.1fs", sum.DowntimeSeconds)
	if sum.Online {
		downtime = "none (online)"
	} else if n := len(m.Downtimes); n > 1 {
		downtime += fmt.Sprintf(" in %d windows (a broken stream was taken again)", n)
	}
	etcd := fmt.Sprintf("revision %d, %d keys", sum.Revision, sum.TotalKeys)
	if sum.TotalKeys == 0 {
		etcd = fmt.Sprintf("revision %d (streamed: keys not counted)", sum.Revision)
	}
	_, err := fmt.Fprintf(r.out, `Backup of %s complete (run %s)
  snapshot:     %s
  size:         %d bytes (%.1f MiB)
  sha256:       %s
  etcd:         %s
  manifest:     %s
  key bundle:   %s
  API downtime: %s
`, sum.Cluster, sum.RunID, sum.Snapshot, sum.Bytes, float64(sum.Bytes)/(1<<20), sum.SHA256, etcd, sum.Manifest, sum.KeyBundle, downtime)
	for _, sh := range sum.Shards {
		if err != nil {
			break
		}
		_, err = fmt.Fprintf(r.out, "  shard %s: %s, %d bytes, revision %d, %d keys\n", sh.Shard, sh.Snapshot, sh.Bytes, sh.Revision, sh.TotalKeys)
	}
	return err
}
