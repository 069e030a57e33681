package command

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/log"
	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/shell"
	"github.com/hcpsnap/hcpsnap/steps"
)

// abandonReport is what --abandon prints before it releases a lock: what the
// run changed, what it left undone, and the commands that restore by hand
// what it did not. Every string read from the run goes through
// checkpoint.OneLine or shell.Quote: the annotation is anyone's input.
type abandonReport struct {
	MessageType string        `json:"message_type"`
	Cluster     string        `json:"cluster"`
	RunID       string        `json:"run,omitempty"`
	Host        string        `json:"host,omitempty"`
	Started     *time.Time    `json:"started,omitempty"`
	Updated     *time.Time    `json:"updated,omitempty"`
	Unreadable  string        `json:"unreadable,omitempty"`
	Steps       []abandonStep `json:"steps,omitempty"`
	NotRestored []string      `json:"notRestored"`
	LeftUndone  []string      `json:"leftUndone"`
	Commands    []string      `json:"commands"`
}

type abandonStep struct {
	Step   string `json:"step"`
	Status string `json:"status"`
	Note   string `json:"note,omitempty"`
}

// abandon prints what the run holding the cluster (or this machine's
// unfinished run of it) changed and left undone, then, once confirmed,
// releases its lock and marks this machine's run file abandoned. It undoes
// nothing: after an exit 5, a person fixes the cluster by hand (the report
// prints the commands) and this is how the cluster is released.
func (o *BackupOptions) abandon(ctx context.Context, hc *hyperv1.HostedCluster, cluster checkpoint.Cluster) error {
	_, annotated := hc.Annotations[steps.RunAnnotation]
	held, heldErr := steps.Holder(hc)
	if heldErr == nil && held != nil {
		heldErr = held.Validate("backup", cluster)
	}
	var run, local *checkpoint.Run
	switch {
	case annotated && heldErr == nil:
		run = held
		l, err := checkpoint.ReadFile(filepath.Join(o.StateDir, checkpoint.FileName(held)))
		switch {
		case err == nil && l.RunID == held.RunID:
			local = l
			if l.Serial > held.Serial {
				run = l
			}
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			log.FromContext(ctx).Warn("this machine's run file of the run is unreadable; it is left as it is", "err", err)
		}
	case annotated:
		// An annotation that is no readable run of this cluster: there is
		// nothing to describe, and releasing it is all --abandon can do.
	default:
		l, err := checkpoint.Latest(o.StateDir, cluster)
		if err != nil {
			return exitcode.Usagef("--%s: %s", FlagAbandon, oneLineError(err))
		}
		if l == nil {
			return exitcode.Preconditionf("--%s: HostedCluster %s holds no hcpsnap run, and %s holds no unfinished run of it: there is nothing to release", FlagAbandon, cluster, o.StateDir)
		}
		run, local = l, l
	}

	rep := describeRun(run, cluster, time.Now())
	if annotated && heldErr != nil {
		rep.Unreadable = fmt.Sprintf("annotation %s holds no readable run of this cluster (%s); its value is not shown", steps.RunAnnotation, oneLineError(heldErr))
	}
	if err := o.printAbandon(rep); err != nil {
		return err
	}
	if o.DryRun {
		return nil
	}
	if !o.Yes {
		ok, err := o.confirm(fmt.Sprintf("Release HostedCluster %s from run %s, leaving the above as it is? [y/N] ", cluster, orUnknown(rep.RunID)))
		if err != nil {
			return err
		}
		if !ok {
			return exitcode.Usagef("--%s not confirmed: nothing was changed", FlagAbandon)
		}
	}
	if annotated {
		err := steps.ReleaseHeld(ctx, o.hyper, hc)
		if apierrors.IsConflict(err) {
			return exitcode.Preconditionf("--%s: HostedCluster %s changed since it was read (a run may have updated or taken the lock): nothing was released; run '%s' again to see its state", FlagAbandon, cluster, steps.BackupCommand(cluster, FlagAbandon))
		}
		if err != nil {
			return exitcode.New(exitcode.Precondition, fmt.Errorf("--%s: remove annotation %s from HostedCluster %s: %w", FlagAbandon, steps.RunAnnotation, cluster, err))
		}
	}
	if local != nil {
		local.Abandoned = true
		local.Serial++
		local.UpdatedAt = time.Now().UTC()
		if err := checkpoint.WriteFile(o.StateDir, local); err != nil {
			log.FromContext(ctx).Warn("the lock is released, but this machine's run file could not be marked abandoned", "err", err)
		}
	}
	msg := fmt.Sprintf("HostedCluster %s is released from run %s; a new backup can start. Nothing was undone.", cluster, orUnknown(rep.RunID))
	if o.Global.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(map[string]string{"message_type": "lock_released", "cluster": cluster.String(), "run": rep.RunID, "message": msg})
	}
	_, err := fmt.Fprintln(o.Out, msg)
	return err
}

func orUnknown(id string) string {
	if id == "" {
		return "(unreadable)"
	}
	return id
}

// confirm asks question on stderr and reads the answer from stdin.
func (o *BackupOptions) confirm(question string) (bool, error) {
	if _, err := io.WriteString(o.ErrOut, question); err != nil {
		return false, err
	}
	line, err := bufio.NewReader(o.In).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// describeRun reads a run's step records and outputs as best it can (an
// unreadable part is said so, not refused: --abandon must work on any run).
func describeRun(run *checkpoint.Run, cluster checkpoint.Cluster, now time.Time) abandonReport {
	rep := abandonReport{MessageType: "abandon", Cluster: cluster.String(), NotRestored: []string{}, LeftUndone: []string{}, Commands: []string{}}
	if run == nil {
		return rep
	}
	rep.RunID = checkpoint.OneLine(run.RunID)
	rep.Host = checkpoint.OneLine(run.Host)
	started, updated := run.StartedAt, run.UpdatedAt
	rep.Started, rep.Updated = &started, &updated
	var opts steps.Options
	_ = json.Unmarshal(run.Options, &opts) // best effort: what is missing is said so below
	out, err := steps.LoadOutputs(run)
	if err != nil {
		out = &steps.Outputs{}
	}
	status := run.StatusOf
	began := func(name string) bool {
		s := status(name)
		return s == checkpoint.Done || s == checkpoint.Failed || s == checkpoint.Running
	}
	restored := func(change, counterpart string) bool {
		return status(change) == checkpoint.Undone || status(counterpart) == checkpoint.Done
	}
	hcpNS := cluster.Namespace + "-" + cluster.Name
	notes := map[string]string{}
	changed := func(step, note string, cmds ...string) {
		suffix := " - not restored"
		if step != steps.StepPause && step != steps.StepScaleDown {
			suffix = " - not removed"
		}
		notes[step] = note + suffix
		rep.NotRestored = append(rep.NotRestored, step+": "+note)
		rep.Commands = append(rep.Commands, cmds...)
	}

	if began(steps.StepPause) {
		switch {
		case restored(steps.StepPause, steps.StepResume):
			notes[steps.StepPause] = "restored by " + steps.StepResume
		case out.PausedUntil == nil:
			notes[steps.StepPause] = "nothing recorded, so nothing was changed"
		default:
			was := "absent"
			var orig *string
			if out.PausedUntil.Present {
				was = quoteValue(out.PausedUntil.Value)
				orig = &out.PausedUntil.Value
			}
			changed(steps.StepPause, fmt.Sprintf("spec.pausedUntil was %s, now %s (HyperShift resumes reconciling by itself then)", was, quoteValue(out.PauseUntil)),
				steps.PausedUntilCommand(cluster.Namespace, cluster.Name, orig))
		}
	}
	if began(steps.StepScaleDown) {
		switch {
		case restored(steps.StepScaleDown, steps.StepScaleUp):
			notes[steps.StepScaleDown] = "restored by " + steps.StepScaleUp
		case len(out.Replicas) == 0:
			notes[steps.StepScaleDown] = "nothing recorded, so nothing was scaled"
		default:
			names := make([]string, 0, len(out.Replicas))
			for n := range out.Replicas {
				names = append(names, n)
			}
			sort.Strings(names)
			var was, cmds []string
			for _, n := range names {
				was = append(was, fmt.Sprintf("%s was %d", checkpoint.OneLine(n), out.Replicas[n]))
				cmds = append(cmds, steps.ScaleCommand(hcpNS, n, out.Replicas[n]))
			}
			changed(steps.StepScaleDown, strings.Join(was, ", ")+", now scaled to 0", cmds...)
		}
	}
	if began(steps.StepSnapshotSave) {
		p := steps.SnapshotPath(opts.Etcd.SnapshotDir, run.RunID)
		switch {
		case restored(steps.StepSnapshotSave, steps.StepCleanupPodFile):
			notes[steps.StepSnapshotSave] = "files removed by " + steps.StepCleanupPodFile
		case opts.Member == "" || opts.Etcd.SnapshotDir == "":
			changed(steps.StepSnapshotSave, "snapshot files may remain in an etcd pod (the run's options are unreadable)")
		default:
			pods := []string{checkpoint.OneLine(opts.Member)}
			cmds := []string{steps.RemoveSnapshotCommand(hcpNS, opts.Member, opts.Container, p)}
			// Each etcd shard's member holds a file of the same name; the
			// pod is derived from the shard's name, never read back.
			for _, sh := range out.Shards {
				if sh.Attempt != nil && len(validation.IsDNS1123Label(sh.Shard.Name)) == 0 {
					pod := steps.ShardPod(sh.Shard.Name)
					pods = append(pods, pod)
					cmds = append(cmds, steps.RemoveSnapshotCommand(hcpNS, pod, opts.Container, p))
				}
			}
			changed(steps.StepSnapshotSave, fmt.Sprintf("snapshot files %s* may remain in pod %s/%s", checkpoint.OneLine(p), hcpNS, strings.Join(pods, ", ")), cmds...)
		}
	}
	att := out.Attempt
	if att == nil {
		att = &steps.Attempt{}
	}
	if status(steps.StepUpload) != checkpoint.Done && began(steps.StepUpload) {
		atts := []*steps.Attempt{att}
		for _, sh := range out.Shards {
			if sh.Attempt != nil {
				atts = append(atts, sh.Attempt)
			}
		}
		var keys, cmds []string
		for _, a := range atts {
			if a.ObjectKey == "" {
				continue
			}
			keys = append(keys, "s3://"+checkpoint.OneLine(opts.Bucket)+"/"+checkpoint.OneLine(a.ObjectKey))
			if a.UploadID != "" {
				cmds = append(cmds, shell.Join("aws", "s3api", "abort-multipart-upload", "--bucket", opts.Bucket, "--key", a.ObjectKey, "--upload-id", a.UploadID))
			}
		}
		if len(keys) > 0 {
			changed(steps.StepUpload, "an unfinished multipart upload of "+strings.Join(keys, ", ")+" may remain", cmds...)
		}
	}
	if status(steps.StepWriteManifest) != checkpoint.Done {
		if status(steps.StepUpload) == checkpoint.Done && att.ObjectKey != "" {
			notes[steps.StepUpload] = fmt.Sprintf("s3://%s/%s uploaded, but no manifest describes it (restore will not use it)", checkpoint.OneLine(opts.Bucket), checkpoint.OneLine(att.ObjectKey))
		}
		if status(steps.StepSaveKeys) == checkpoint.Done {
			switch {
			case out.KeyBundleKey != "":
				changed(steps.StepSaveKeys, fmt.Sprintf("the key bundle (AES keys) is at s3://%s/%s, but no backup uses it", checkpoint.OneLine(opts.Bucket), checkpoint.OneLine(out.KeyBundleKey)),
					shell.Join("aws", "s3", "rm", "s3://"+opts.Bucket+"/"+out.KeyBundleKey))
			case out.KeyBundleFile != "":
				changed(steps.StepSaveKeys, fmt.Sprintf("the key bundle (AES keys) is in the file %s on host %s, but no backup uses it", checkpoint.OneLine(out.KeyBundleFile), rep.Host))
			}
		}
	} else {
		notes[steps.StepWriteManifest] = "the backup is complete"
	}

	for _, st := range run.Steps {
		s := abandonStep{Step: checkpoint.OneLine(st.Name), Status: checkpoint.OneLine(string(st.Status)), Note: notes[st.Name]}
		if st.Error != "" && s.Note == "" {
			s.Note = checkpoint.OneLine(short(st.Error))
		}
		if st.Status == checkpoint.Undone && s.Note == "" {
			s.Note = "reverted after a failure"
		}
		rep.Steps = append(rep.Steps, s)
		if st.Status != checkpoint.Done && st.Status != checkpoint.Skipped {
			rep.LeftUndone = append(rep.LeftUndone, s.Step)
		}
	}
	return rep
}

func quoteValue(v string) string { return fmt.Sprintf("%q", v) }

func short(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func (o *BackupOptions) printAbandon(rep abandonReport) error {
	if o.Global.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(rep)
	}
	var b strings.Builder
	if rep.RunID != "" {
		fmt.Fprintf(&b, "Run %s of %s: host %s, started %s, last updated %s (%s ago).\n", rep.RunID, rep.Cluster, orUnknown(rep.Host),
			rep.Started.UTC().Format(time.RFC3339), rep.Updated.UTC().Format(time.RFC3339), time.Since(*rep.Updated).Round(time.Second))
		for _, s := range rep.Steps {
			line := fmt.Sprintf("  %-22s %s", s.Step, s.Status)
			if s.Note != "" {
				line += ": " + s.Note
			}
			fmt.Fprintln(&b, line)
		}
	}
	if rep.Unreadable != "" {
		fmt.Fprintf(&b, "HostedCluster %s: %s.\n", rep.Cluster, rep.Unreadable)
	}
	if len(rep.LeftUndone) > 0 {
		fmt.Fprintf(&b, "Left undone: %s.\n", strings.Join(rep.LeftUndone, ", "))
	}
	if len(rep.NotRestored) == 0 {
		fmt.Fprintln(&b, "Not restored: nothing; the run left no change in place.")
	} else {
		fmt.Fprintf(&b, "Not restored: %d change(s). Make sure the run's process is gone, then restore by hand:\n", len(rep.NotRestored))
		for _, c := range rep.Commands {
			fmt.Fprintln(&b, "  "+c)
		}
	}
	fmt.Fprintln(&b, "Releasing the lock undoes nothing, and the run can no longer be resumed.")
	_, err := io.WriteString(o.Out, b.String())
	return err
}
