package command

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/steps"
)

// TestSummaryOfAStreamedBackup: a streamed snapshot's keys are not counted,
// so the summary does not claim 0 keys, and two downtime windows (a broken
// stream taken again) are said as such.
func TestSummaryOfAStreamedBackup(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	at := func(s int) *time.Time { v := t0.Add(time.Duration(s) * time.Second); return &v }
	for _, tt := range []struct {
		name   string
		status steps.SnapshotStatus
		via    string
		want   []string
	}{
		{"exec", steps.SnapshotStatus{Revision: 72, TotalKey: 421, TotalSize: 1 << 20}, steps.ViaExec,
			[]string{"etcd:         revision 72, 421 keys", "API downtime: 2.0s\n"}},
		{"stream", steps.SnapshotStatus{Revision: 72, TotalSize: 1 << 20}, steps.ViaStream,
			[]string{"etcd:         revision 72 (streamed: keys not counted)", "API downtime: 3.0s in 2 windows"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := &steps.Outputs{
				Attempt:       &steps.Attempt{ID: "a", Via: tt.via, ObjectKey: "b/c/snapshot.db", Bytes: 1 << 20, Status: &tt.status},
				DowntimeStart: at(10), DowntimeEnd: at(12),
			}
			if tt.via == steps.ViaStream {
				out.EarlierDowntimes = []steps.Window{{Start: *at(0), End: *at(1)}}
			}
			s := &steps.State{Opts: steps.Options{Cluster: "example", Namespace: "clusters", Bucket: "b"}, Out: out,
				Run: checkpoint.New("backup", checkpoint.Cluster{Namespace: "clusters", Name: "example"}, "host", nil, t0)}
			var buf bytes.Buffer
			if err := newReporter(OutputText, &buf, &bytes.Buffer{}).summary(s); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("summary lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
}
