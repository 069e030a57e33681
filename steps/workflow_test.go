package steps

import (
	"slices"
	"testing"

	"github.com/hcpsnap/hcpsnap/checkpoint"
)

// TestBackupWorkflowShape pins the backup workflow's order, brackets and
// dependencies, on which the engine's undo and resume act (the engine's own
// tests use a synthetic workflow of the same shape).
func TestBackupWorkflowShape(t *testing.T) {
	want := []struct {
		name, reverts string
		service       bool
		reapply       bool
		needs, uses   []string
	}{
		{name: StepPreflight},
		{name: StepPause, reapply: true},
		{name: StepScaleDown, reapply: true, needs: []string{StepPause}},
		{name: StepSnapshotSave, needs: []string{StepPause, StepScaleDown}},
		{name: StepScaleUp, reverts: StepScaleDown, service: true},
		{name: StepResume, reverts: StepPause, service: true},
		{name: StepUpload, needs: []string{StepSnapshotSave}, uses: []string{StepSnapshotSave}},
		{name: StepSaveKeys},
		{name: StepCleanupPodFile, reverts: StepSnapshotSave, uses: []string{StepSnapshotSave}},
		{name: StepWriteManifest, uses: []string{StepSnapshotSave, StepUpload, StepSaveKeys}},
	}
	got := Backup()
	if len(got) != len(want) {
		t.Fatalf("%d steps, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Reverts != w.reverts || g.RestoresService != w.service || g.Reapply != w.reapply ||
			!slices.Equal(g.Needs, w.needs) || !slices.Equal(g.Uses, w.uses) {
			t.Errorf("step %d = %s (reverts %q, service %v, reapply %v, needs %v, uses %v), want %+v",
				i, g.Name, g.Reverts, g.RestoresService, g.Reapply, g.Needs, g.Uses, w)
		}
		if g.Run == nil || g.Plan == nil || g.Summary == "" {
			t.Errorf("step %s lacks Run, Plan or Summary", g.Name)
		}
		if g.ReadOnly != (i == 0) {
			t.Errorf("step %s ReadOnly = %v", g.Name, g.ReadOnly)
		}
	}
}

// TestLoadOutputsOfAnEarlierRunFile: a run file written before the attempt
// had a struct of its own still resumes with its snapshot's outputs.
func TestLoadOutputsOfAnEarlierRunFile(t *testing.T) {
	run := &checkpoint.Run{RunID: "r", Outputs: []byte(`{"hcpNamespace":"clusters-example","snapshotPath":"/var/lib/data/hcpsnap-r.db",
		"snapshotID":"r-1","snapshotBytes":42,"etcdSHA256":"ab","sha256":"cd","objectKey":"backups/x/snapshot.db",
		"snapshot":{"revision":7}}`)}
	out, err := LoadOutputs(run)
	if err != nil {
		t.Fatal(err)
	}
	a := out.Attempt
	if a == nil || a.ID != "r-1" || a.Path != "/var/lib/data/hcpsnap-r.db" || a.Bytes != 42 || a.EtcdSHA256 != "ab" ||
		a.SHA256 != "cd" || a.ObjectKey != "backups/x/snapshot.db" || a.Status == nil || a.Status.Revision != 7 {
		t.Errorf("attempt %+v", a)
	}
	if out.HCPNamespace != "clusters-example" {
		t.Errorf("outputs %+v", out)
	}
}
