package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/shell"
	"github.com/hcpsnap/hcpsnap/steps"
)

// validateOptions checks what a backup run records: the options given as
// flags for a new run, and the options read back from a run file or the
// HostedCluster annotation for --resume, which anyone allowed to patch
// HostedClusters can edit. Both pass the same checks; messages name the
// flags. It does no I/O.
func validateOptions(o steps.Options) error {
	for _, v := range []struct{ flag, val string }{{FlagCluster, o.Cluster}, {FlagNamespace, o.Namespace}, {FlagMember, o.Member}, {FlagContainer, o.Container}} {
		if errs := validation.IsDNS1123Label(v.val); len(errs) > 0 {
			return exitcode.Usagef("--%s %q is not a valid Kubernetes name: %s", v.flag, v.val, errs[0])
		}
	}
	if err := validateBucket(o.Bucket); err != nil {
		return err
	}
	for _, d := range o.Deployments {
		if errs := validation.IsDNS1123Subdomain(d); len(errs) > 0 {
			return exitcode.Usagef("--%s: %q is not a valid Deployment name", FlagDeployments, d)
		}
	}
	switch o.Via {
	case steps.ViaStream, steps.ViaExec, "": // "": recorded before --via existed (exec)
	default:
		return exitcode.Usagef("--%s %q: use stream or exec", FlagVia, o.Via)
	}
	if o.SnapshotRetries < 0 || o.SnapshotRetries > 10 {
		return exitcode.Usagef("--%s %d is out of range: use 0 to 10", FlagRetries, o.SnapshotRetries)
	}
	if o.Online && o.HoldAPIUntilSaved {
		return exitcode.Usagef("--%s and --%s exclude each other: an online backup takes the API down at no time", FlagOnline, FlagHoldAPI)
	}
	if len(o.Deployments) == 0 && !o.Online {
		return exitcode.Usagef("--%s is empty: name the API Deployments to scale down, or use --%s", FlagDeployments, FlagOnline)
	}
	for _, p := range []struct{ flag, val string }{{FlagPrefix, o.Prefix}, {FlagKeyPrefix, o.KeyPrefix}} {
		if strings.HasPrefix(p.val, "/") || strings.Contains(p.val, "//") || strings.Contains(p.val, "..") || !checkpoint.Printable(p.val) {
			return exitcode.Usagef("--%s %q is not a clean key prefix: no leading slash, no empty or '..' segments", p.flag, p.val)
		}
	}
	if o.Prefix == o.KeyPrefix {
		return exitcode.Usagef("--%s and --%s are both %q: keep the key bundle apart from the snapshots", FlagPrefix, FlagKeyPrefix, o.Prefix)
	}
	if o.PauseTimeout < time.Minute || o.PauseTimeout > 24*time.Hour {
		return exitcode.Usagef("--%s %s is out of range: use 1m to 24h, longer than the snapshot takes", FlagPauseTimeout, o.PauseTimeout)
	}
	if o.WaitTimeout <= 0 {
		return exitcode.Usagef("--%s %s must be a positive duration", FlagWaitTimeout, o.WaitTimeout)
	}
	if err := validateSkipSteps(o.SkipSteps); err != nil {
		return err
	}
	switch o.SSE {
	case "", "AES256", "aws:kms":
	default:
		return exitcode.Usagef("--%s %q is not supported: use AES256 or aws:kms", FlagSSE, o.SSE)
	}
	if o.SSEKMSKeyID != "" && o.SSE != "aws:kms" {
		return exitcode.Usagef("--%s needs --%s aws:kms", FlagSSEKMSKeyID, FlagSSE)
	}
	if !checkpoint.Printable(o.SSEKMSKeyID) || !checkpoint.Printable(o.KeyOut) {
		return exitcode.Usagef("--%s and --%s must be printable", FlagSSEKMSKeyID, FlagKeyOut)
	}
	if o.KeyOut != "" && o.SSE != "" {
		return exitcode.Usagef("--%s and --%s contradict each other: a local key file is not encrypted by S3", FlagKeyOut, FlagSSE)
	}
	// Paths inside the pod: the snapshot file is derived from the folder,
	// and etcdctl runs from the path given.
	for _, p := range []struct{ flag, val string }{{FlagSnapshotDir, o.Etcd.SnapshotDir}, {FlagEtcdctl, o.Etcd.Etcdctl},
		{FlagEtcdutl, o.Etcd.Etcdutl}, {FlagEtcdCert, o.Etcd.Cert}, {FlagEtcdKey, o.Etcd.Key}, {FlagEtcdCACert, o.Etcd.CACert}} {
		if (p.flag == FlagEtcdCACert || p.flag == FlagEtcdutl) && p.val == "" {
			continue // detected in preflight; the default etcdutl for a run recorded before --etcdutl
		}
		if !strings.HasPrefix(p.val, "/") || path.Clean(p.val) != p.val || strings.ContainsFunc(p.val, unicode.IsSpace) || !checkpoint.Printable(p.val) {
			return exitcode.Usagef("--%s %q must be a clean absolute path inside the pod", p.flag, p.val)
		}
	}
	if o.Etcd.Endpoint == "" || len(o.Etcd.Endpoint) > 255 || strings.ContainsFunc(o.Etcd.Endpoint, unicode.IsSpace) || !checkpoint.Printable(o.Etcd.Endpoint) {
		return exitcode.Usagef("--%s %q is not an endpoint: use HOST:PORT as seen from inside the pod", FlagEtcdEndpoint, o.Etcd.Endpoint)
	}
	return nil
}

// validateSkipSteps refuses unknown steps and the steps whose absence breaks
// the safety rules: preflight (nothing is checked and no lock is taken
// before the cluster is changed) and every counterpart, which undoes a
// change and therefore always runs.
func validateSkipSteps(names []string) error {
	workflow := steps.Backup()
	engine := steps.Engine{Steps: workflow}
	if err := engine.ValidateNames(names); err != nil {
		return err
	}
	for _, n := range names {
		if n == steps.StepPreflight {
			return exitcode.Usagef("--%s %s: preflight always runs; it checks the cluster and takes the lock before anything is changed", FlagSkipSteps, n)
		}
		for _, st := range workflow {
			if st.Name != n || st.Reverts == "" {
				continue
			}
			what, hint := "a change in place", ""
			switch n {
			case steps.StepScaleUp, steps.StepResume:
				what, hint = "the control plane down", "; use --"+FlagOnline+" to avoid downtime"
			case steps.StepCleanupPodFile:
				what = "the snapshot file in the etcd pod's data volume"
			}
			return exitcode.Usagef("--%s %s would leave %s: it is the counterpart of %s and always runs%s", FlagSkipSteps, n, what, st.Reverts, hint)
		}
	}
	return nil
}

func validateBucket(b string) error {
	if b == "" {
		return nil
	}
	if errs := validation.IsDNS1123Subdomain(b); len(errs) > 0 || len(b) < 3 || len(b) > 63 {
		return exitcode.Usagef("--%s %q is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)", FlagBucket, b)
	}
	return nil
}

// trimmed drops blanks around and between comma-separated flag values.
func trimmed(list []string) []string {
	var out []string
	for _, v := range list {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// recordedRun is a run read back for --resume, every part of it checked as
// untrusted input.
type recordedRun struct {
	run  *checkpoint.Run
	opts steps.Options
	out  *steps.Outputs
}

// checkRecorded checks a run read back from the HostedCluster annotation or
// a run file before any of it is used. trusted is this machine's run file of
// the same run, or nil. here are this machine's options (flags and
// defaults; KeyOut only when --key-out is set): without a trusted run file,
// they alone choose a local key file, and the options that choose what runs
// in the pod and what is scaled must agree with them, so that an edited
// annotation cannot pick a program, a folder or a Deployment. Errors are
// usage errors on one line.
func checkRecorded(run, trusted *checkpoint.Run, cluster checkpoint.Cluster, here steps.Options) (*recordedRun, error) {
	keyOut := here.KeyOut
	refuse := func(err error) error {
		return exitcode.Usagef("--%s: %s; release the cluster with '%s' if the run cannot be finished", FlagResume, oneLineError(err), steps.BackupCommand(cluster, "abandon"))
	}
	if err := run.Validate("backup", cluster); err != nil {
		return nil, refuse(err)
	}
	if err := run.CheckSteps(stepNames()); err != nil {
		return nil, refuse(err)
	}
	id := run.RunID
	src := run
	if trusted != nil {
		src = trusted
	}
	var opts steps.Options
	dec := json.NewDecoder(bytes.NewReader(src.Options))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&opts); err != nil || len(bytes.TrimSpace(src.Options)) == 0 || dec.More() {
		return nil, refuse(fmt.Errorf("run %s: its recorded options are not readable (%v)", id, err))
	}
	if trusted == nil {
		recorded := opts.KeyOut
		opts.KeyOut = keyOut
		switch {
		case recorded == "" && keyOut != "":
			return nil, exitcode.Usagef("--%s %s contradicts run %s, which saves its key bundle to the bucket: drop --%s to resume it", FlagKeyOut, strconv.Quote(keyOut), id, FlagKeyOut)
		case recorded != "" && keyOut == "" && run.StatusOf(steps.StepSaveKeys) != checkpoint.Done:
			return nil, exitcode.Usagef("run %s saves its key bundle to a local file on host %s, which this machine does not choose from the HostedCluster: pass --%s FILE to write it here", id, checkpoint.OneLine(run.Host), FlagKeyOut)
		}
	}
	if err := validateOptions(opts); err != nil {
		return nil, refuse(fmt.Errorf("run %s records an option hcpsnap refuses: %v", id, err))
	}
	if trusted == nil {
		if err := checkPodOptions(opts, here, id); err != nil {
			return nil, err
		}
	}
	if opts.Cluster != cluster.Name || opts.Namespace != cluster.Namespace {
		return nil, refuse(fmt.Errorf("run %s records options of cluster %s/%s", id, strconv.Quote(opts.Namespace), strconv.Quote(opts.Cluster)))
	}
	out, err := steps.LoadOutputs(run)
	if err != nil {
		return nil, refuse(err)
	}
	if err := steps.CheckOutputs(out, opts, id); err != nil {
		return nil, refuse(fmt.Errorf("run %s: %w", id, err))
	}
	return &recordedRun{run: run, opts: opts, out: out}, nil
}

// podFlags are the recorded options that choose what runs in the etcd pod
// and what is scaled down: a run known only from the HostedCluster
// annotation must name the same as this machine's flags.
var podFlags = map[string]bool{FlagMember: true, FlagContainer: true, FlagDeployments: true, FlagEtcdctl: true, FlagEtcdutl: true,
	FlagEtcdEndpoint: true, FlagEtcdCACert: true, FlagEtcdCert: true, FlagEtcdKey: true, FlagSnapshotDir: true}

func checkPodOptions(recorded, here steps.Options, runID string) error {
	h := recordedFlags(here)
	for i, r := range recordedFlags(recorded) {
		if !podFlags[r.flag] || r.value == h[i].value {
			continue
		}
		return exitcode.Usagef("run %s records --%s %s where this machine has %s, and hcpsnap does not take what runs in the pod from the HostedCluster alone: if the run was started so, pass --%s %s to confirm it",
			runID, r.flag, strconv.Quote(r.value), strconv.Quote(h[i].value), r.flag, shell.Quote(r.value))
	}
	return nil
}

// oneLineError renders err for a one-line message, quoting it when it
// holds a line break or another unprintable character.
func oneLineError(err error) string { return checkpoint.OneLine(err.Error()) }

// recordedFlags are the flags whose values a run records, with the value
// each takes in o, rendered for comparison and messages.
func recordedFlags(o steps.Options) []struct{ flag, value string } {
	d := func(v time.Duration) string { return v.String() }
	b := strconv.FormatBool
	return []struct{ flag, value string }{
		{FlagBucket, o.Bucket}, {FlagPrefix, o.Prefix}, {FlagKeyPrefix, o.KeyPrefix},
		{FlagMember, o.Member}, {FlagContainer, o.Container}, {FlagDeployments, strings.Join(o.Deployments, ",")},
		{FlagPauseTimeout, d(o.PauseTimeout)}, {FlagWaitTimeout, d(o.WaitTimeout)},
		{FlagOnline, b(o.Online)}, {FlagHoldAPI, b(o.HoldAPIUntilSaved)}, {FlagSkipSteps, strings.Join(o.SkipSteps, ",")},
		{FlagVia, o.Via}, {FlagRetries, strconv.Itoa(o.SnapshotRetries)}, {FlagWithoutShards, b(o.WithoutShards)},
		{FlagKeyOut, o.KeyOut}, {FlagSSE, o.SSE}, {FlagSSEKMSKeyID, o.SSEKMSKeyID},
		{FlagEtcdctl, o.Etcd.Etcdctl}, {FlagEtcdutl, o.Etcd.Etcdutl}, {FlagEtcdEndpoint, o.Etcd.Endpoint}, {FlagEtcdCACert, o.Etcd.CACert},
		{FlagEtcdCert, o.Etcd.Cert}, {FlagEtcdKey, o.Etcd.Key}, {FlagSnapshotDir, o.Etcd.SnapshotDir},
	}
}

// checkFlagsAgree refuses a flag the user set that contradicts the value the
// run recorded: a resumed run goes on with what it started with, and a flag
// that would be ignored must not look as if it were obeyed.
func checkFlagsAgree(given, recorded steps.Options, isSet func(string) bool, runID string) error {
	if isSet == nil {
		return nil
	}
	rec := recordedFlags(recorded)
	for i, g := range recordedFlags(given) {
		if !isSet(g.flag) || g.value == rec[i].value {
			continue
		}
		return exitcode.Usagef("--%s %s contradicts run %s, which recorded %s: drop the flag to resume with the recorded value, or start a new backup",
			g.flag, strconv.Quote(g.value), runID, strconv.Quote(rec[i].value))
	}
	return nil
}

// findRun returns the run to resume: the one the HostedCluster holds or,
// failing that, this machine's newest active run file of the cluster. local
// is this machine's run file of the same run, or nil; source says where the
// run came from, for the log.
func findRun(stateDir string, held *checkpoint.Run, cluster checkpoint.Cluster) (run, local *checkpoint.Run, source string, err error) {
	if held != nil && held.Active() {
		if err := held.Validate("backup", cluster); err != nil {
			return nil, nil, "", exitcode.Usagef("--%s: %s", FlagResume, oneLineError(err))
		}
		local, err := checkpoint.ReadFile(filepath.Join(stateDir, checkpoint.FileName(held)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return held, nil, "the HostedCluster annotation", nil
		case err != nil:
			return nil, nil, "", exitcode.Usagef("--%s: %s", FlagResume, oneLineError(err))
		case local.RunID != held.RunID:
			return nil, nil, "", exitcode.Usagef("--%s: run file %s holds run %s, not %s: move it away", FlagResume, checkpoint.FileName(held), checkpoint.OneLine(local.RunID), held.RunID)
		case !local.Active():
			return nil, nil, "", exitcode.Usagef("--%s: run %s was ended on this machine (finished or abandoned) but still holds the cluster: release it with '%s'", FlagResume, held.RunID, steps.BackupCommand(cluster, "abandon"))
		case local.Serial > held.Serial:
			return local, local, "this machine's run file (newer than the annotation)", nil
		}
		return held, local, "the HostedCluster annotation", nil
	}
	local, err = checkpoint.Latest(stateDir, cluster)
	if err != nil {
		return nil, nil, "", exitcode.Usagef("--%s: %s", FlagResume, oneLineError(err))
	}
	if local == nil {
		return nil, nil, "", exitcode.Preconditionf("--%s: no unfinished backup run of %s on the HostedCluster or in %s: start a new backup without --%s", FlagResume, cluster, stateDir, FlagResume)
	}
	return local, local, "this machine's run file", nil
}
