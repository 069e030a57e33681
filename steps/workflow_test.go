package steps

import (
	"slices"
	"testing"
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
