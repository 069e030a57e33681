package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	"k8s.io/client-go/util/retry"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// RunAnnotation holds a copy of the running backup's checkpoint on its
// HostedCluster. It is the lock that keeps a second run away, and it lets
// `hcpsnap backup --resume` finish a crashed run from any machine.
const RunAnnotation = "hcpsnap.io/backup-run"

// LockClient is what the saver needs of HyperShift's API: it reads the
// HostedCluster and changes only its run annotation, with JSON merge patches.
// It never writes back a decoded object, which would erase the fields that a
// newer HyperShift API has and the vendored Go type lacks.
type LockClient interface {
	GetHostedCluster(ctx context.Context, namespace, name string) (*hyperv1.HostedCluster, error)
	PatchHostedCluster(ctx context.Context, namespace, name string, mergePatch []byte) (*hyperv1.HostedCluster, error)
}

// ClusterSaver persists a checkpoint to the run file and, once preflight
// has passed (nothing is changed before), to the HostedCluster annotation.
type ClusterSaver struct {
	Dir    string
	Client LockClient
	held   bool
}

var _ Saver = (*ClusterSaver)(nil)

// Save writes the run file, then the annotation. Every write of the
// annotation is a merge patch that carries the resourceVersion the holder
// check read: the apiserver refuses it with a Conflict when the
// HostedCluster changed since, and the retry reads it again, so a run that
// another one overtook is refused rather than overwritten. A run file that
// cannot be written (a full state folder) does not keep the annotation from
// being written: each records what it can, and the error names what failed.
func (c *ClusterSaver) Save(ctx context.Context, run *checkpoint.Run) error {
	fileErr := checkpoint.WriteFile(c.Dir, run)
	if !c.held && run.StatusOf(StepPreflight) != checkpoint.Done {
		return fileErr
	}
	data, err := json.Marshal(run)
	if err != nil {
		return err
	}
	value := string(data)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		hc, err := c.Client.GetHostedCluster(ctx, run.Cluster.Namespace, run.Cluster.Name)
		if err != nil {
			return err
		}
		if err := checkHolder(hc, run.RunID); err != nil {
			return err
		}
		patch, err := annotationPatch(hc.ResourceVersion, &value)
		if err != nil {
			return err
		}
		_, err = c.Client.PatchHostedCluster(ctx, run.Cluster.Namespace, run.Cluster.Name, patch)
		return err
	})
	if err != nil {
		return errors.Join(fileErr, fmt.Errorf("record the run on HostedCluster %s: %w", run.Cluster, err))
	}
	c.held = true
	return fileErr
}

// Release removes the annotation if this run holds it. The run file stays
// as the record of what happened.
func (c *ClusterSaver) Release(ctx context.Context, run *checkpoint.Run) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		hc, err := c.Client.GetHostedCluster(ctx, run.Cluster.Namespace, run.Cluster.Name)
		if err != nil {
			return err
		}
		held, err := Holder(hc)
		if err != nil || held == nil || held.RunID != run.RunID {
			return nil // not ours, or gone: nothing to release
		}
		patch, err := annotationPatch(hc.ResourceVersion, nil)
		if err != nil {
			return err
		}
		_, err = c.Client.PatchHostedCluster(ctx, run.Cluster.Namespace, run.Cluster.Name, patch)
		return err
	})
}

// annotationPatch is the JSON merge patch that sets the run annotation to
// *value, or removes it when value is nil, on the condition that the
// HostedCluster is still at resourceVersion: a merge patch that names
// metadata.resourceVersion is refused with a Conflict when the object has
// another one (the precondition `kubectl annotate --resource-version` uses).
func annotationPatch(resourceVersion string, value *string) ([]byte, error) {
	if resourceVersion == "" {
		return nil, errors.New("the HostedCluster has no resourceVersion to take the lock against")
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": resourceVersion,
		"annotations":     map[string]*string{RunAnnotation: value},
	}})
}

// Holder returns the run recorded on the HostedCluster, or nil.
func Holder(hc *hyperv1.HostedCluster) (*checkpoint.Run, error) {
	v, ok := hc.Annotations[RunAnnotation]
	if !ok {
		return nil, nil
	}
	run, err := checkpoint.Decode([]byte(v))
	if err != nil {
		return nil, fmt.Errorf("annotation %s on HostedCluster %s/%s: %w; once no hcpsnap run is active, release it with '%s'",
			RunAnnotation, hc.Namespace, hc.Name, err, BackupCommand(checkpoint.Cluster{Namespace: hc.Namespace, Name: hc.Name}, "abandon"))
	}
	return run, nil
}

// checkHolder refuses when another unfinished run holds the cluster.
func checkHolder(hc *hyperv1.HostedCluster, runID string) error {
	held, err := Holder(hc)
	if err != nil {
		return exitcode.New(exitcode.Precondition, err)
	}
	if held == nil || held.RunID == runID || held.Finished {
		return nil
	}
	return exitcode.Preconditionf("HostedCluster %s/%s is held by hcpsnap run %s (host %s, started %s, updated %s): wait for it to finish, or if it died, finish it with '%s' (or release it with '%s')",
		hc.Namespace, hc.Name, checkpoint.OneLine(held.RunID), checkpoint.OneLine(held.Host), held.StartedAt.Format(time.RFC3339), held.UpdatedAt.Format(time.RFC3339),
		BackupCommand(checkpoint.Cluster{Namespace: hc.Namespace, Name: hc.Name}, "resume"), BackupCommand(checkpoint.Cluster{Namespace: hc.Namespace, Name: hc.Name}, "abandon"))
}

// CheckNotHeld is the early, read-only form of the lock check, for
// preflight: it refuses before anything is changed.
func CheckNotHeld(hc *hyperv1.HostedCluster, runID string) error { return checkHolder(hc, runID) }

// ReleaseHeld removes the run annotation of hc, as `hcpsnap backup
// --abandon` does once a person has confirmed it. It is a merge patch of
// metadata.annotations alone, with hc's resourceVersion as precondition: a
// lock taken or updated since hc was read fails with a Conflict instead of
// being released unseen.
func ReleaseHeld(ctx context.Context, client interface {
	PatchHostedCluster(ctx context.Context, namespace, name string, mergePatch []byte) (*hyperv1.HostedCluster, error)
}, hc *hyperv1.HostedCluster) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": hc.ResourceVersion,
		"annotations":     map[string]any{RunAnnotation: nil},
	}})
	if err != nil {
		return err
	}
	_, err = client.PatchHostedCluster(ctx, hc.Namespace, hc.Name, patch)
	return err
}
