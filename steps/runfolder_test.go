package steps

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/checkpoint"
)

// TestRunFolder: the folder a run writes is found from what it recorded, and
// only once preflight chose its timestamp.
func TestRunFolder(t *testing.T) {
	run := checkpoint.New("backup", checkpoint.Cluster{Namespace: "clusters", Name: "example"}, "host", []string{"preflight"}, time.Now())
	opts, _ := json.Marshal(Options{Cluster: "example", Namespace: "clusters", Bucket: "b", Prefix: "/backups/"})
	run.Options = opts
	if _, _, ok := RunFolder(run); ok {
		t.Error("a run without outputs has a folder")
	}
	run.Outputs, _ = json.Marshal(Outputs{Timestamp: "20260309T120000Z"})
	bucket, folder, ok := RunFolder(run)
	if !ok || bucket != "b" || folder != "backups/example/20260309T120000Z" {
		t.Errorf("RunFolder = %q, %q, %v; want b, backups/example/20260309T120000Z, true", bucket, folder, ok)
	}
	run.Command = "restore"
	if _, _, ok := RunFolder(run); ok {
		t.Error("a restore run has a backup folder")
	}
}
