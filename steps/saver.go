package steps

import (
	"context"
	"encoding/json"
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

// LockClient is what the saver needs of HyperShift's API.
type LockClient interface {
	GetHostedCluster(ctx context.Context, namespace, name string) (*hyperv1.HostedCluster, error)
	UpdateHostedCluster(ctx context.Context, hc *hyperv1.HostedCluster) (*hyperv1.HostedCluster, error)
}

// ClusterSaver persists a checkpoint to the run file and, once preflight
// has passed (nothing is changed before), to the HostedCluster annotation.
type ClusterSaver struct {
	Dir    string
	Client LockClient
	held   bool
}

var _ Saver = (*ClusterSaver)(nil)

// Save writes the run file, then the annotation. Taking the annotation the
// first time is an optimistic-concurrency update that fails when another
// unfinished run holds it.
func (c *ClusterSaver) Save(ctx context.Context, run *checkpoint.Run) error {
	if err := checkpoint.WriteFile(c.Dir, run); err != nil {
		return err
	}
	if !c.held && run.StatusOf(StepPreflight) != checkpoint.Done {
		return nil
	}
	data, err := json.Marshal(run)
	if err != nil {
		return err
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		hc, err := c.Client.GetHostedCluster(ctx, run.Cluster.Namespace, run.Cluster.Name)
		if err != nil {
			return err
		}
		if err := checkHolder(hc, run.RunID); err != nil {
			return err
		}
		if hc.Annotations == nil {
			hc.Annotations = map[string]string{}
		}
		hc.Annotations[RunAnnotation] = string(data)
		_, err = c.Client.UpdateHostedCluster(ctx, hc)
		return err
	})
	if err != nil {
		return fmt.Errorf("record the run on HostedCluster %s: %w", run.Cluster, err)
	}
	c.held = true
	return nil
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
		delete(hc.Annotations, RunAnnotation)
		_, err = c.Client.UpdateHostedCluster(ctx, hc)
		return err
	})
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
