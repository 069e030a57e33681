package steps

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	hyperv1 "github.com/openshift/hypershift/api/hypershift/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/s3"
)

// The pausedUntil values a HostedCluster may hold before a backup.
var pausedUntilCases = []struct {
	name  string
	value *string
}{
	{"absent", nil},
	{"RFC3339 date", ptr.To("2031-01-02T03:04:05Z")},
	{"true", ptr.To("true")},
}

var timestampRE = regexp.MustCompile(`^\d{8}T\d{6}Z$`)

// checkRestored asserts that the cluster is as it was before the run.
func checkRestored(t *testing.T, fx *fixture, orig *string) {
	t.Helper()
	got := fx.replicas(t)
	for name, want := range deploymentReplicas {
		if got[name] != want {
			t.Errorf("Deployment %s has %d replicas, want the original %d", name, got[name], want)
		}
	}
	hc := fx.hs.current()
	if describe(hc.Spec.PausedUntil) != describe(orig) {
		t.Errorf("spec.pausedUntil = %s, want the original %s", describe(hc.Spec.PausedUntil), describe(orig))
	}
	if orig == nil {
		raw, err := json.Marshal(hc.Spec)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), "pausedUntil") {
			t.Errorf("spec.pausedUntil was absent and must be removed, not emptied: %s", raw)
		}
	}
	if hcp, _ := fx.hs.GetHostedControlPlane(quietContext(), testHCPNS, testCluster); describe(hcp.Spec.PausedUntil) != describe(orig) {
		t.Errorf("HostedControlPlane spec.pausedUntil = %s, want %s", describe(hcp.Spec.PausedUntil), describe(orig))
	}
	if files := fx.exec.fileNames(); len(files) != 0 {
		t.Errorf("files left in the pod: %v", files)
	}
}

// wantPatch is the merge patch that sets pausedUntil to v.
func wantPatch(v *string) string {
	if v == nil {
		return `{"spec":{"pausedUntil":null}}`
	}
	return fmt.Sprintf(`{"spec":{"pausedUntil":%q}}`, *v)
}

func TestBackupRun(t *testing.T) {
	for _, pc := range pausedUntilCases {
		t.Run("pausedUntil "+pc.name, func(t *testing.T) {
			fx := newFixture(t, pc.value)
			s := fx.state(defaultOptions())
			var events []string
			s.Events = func(e Event) {
				if e.MessageType != "upload_progress" {
					events = append(events, e.MessageType+" "+e.Step)
				}
			}
			// Every change is recorded in the checkpoint before it is made.
			fx.beforeWrite = func(what string) {
				_, out := fx.saver.last(t)
				switch {
				case strings.HasPrefix(what, "patch") && (out.PausedUntil == nil || out.PauseUntil == ""):
					t.Errorf("%s before the original pausedUntil and the deadline were saved", what)
				case strings.HasPrefix(what, "patch") && describe(clonePtr(ptrIf(out.PausedUntil))) != describe(pc.value):
					t.Errorf("%s: saved original %+v, want %s", what, out.PausedUntil, describe(pc.value))
				case strings.HasPrefix(what, "scale") && len(out.Replicas) != len(deploymentReplicas):
					t.Errorf("%s before the original replicas were saved (saved %v)", what, out.Replicas)
				}
			}

			if err := fx.execute(s); err != nil {
				t.Fatalf("backup failed: %v", err)
			}

			if !s.Run.Finished {
				t.Error("run not finished")
			}
			for name, st := range statuses(s.Run) {
				if st != checkpoint.Done {
					t.Errorf("step %s is %s, want done", name, st)
				}
			}
			checkRestored(t, fx, pc.value)
			if last, _ := fx.saver.last(t); !last.Finished {
				t.Error("the last saved checkpoint does not say finished")
			}

			// Order of every change across cluster, pod and bucket.
			ts := s.Out.Timestamp
			if !timestampRE.MatchString(ts) {
				t.Fatalf("timestamp %q", ts)
			}
			snapKey := "backups/example/" + ts + "/snapshot.db"
			keysKey := "hcpsnap-keys/example/" + ts + "/key-bundle.json"
			manKey := "backups/example/" + ts + "/manifest.json"
			want := []string{
				"exec tools", "exec endpoint-status", "exec df",
				"hostedcluster pausedUntil=" + describe(&s.Out.PauseUntil),
				"scale kube-apiserver=0", "scale openshift-apiserver=0", "scale openshift-oauth-apiserver=0",
				"exec snapshot-save",
				"scale kube-apiserver=3", "scale openshift-apiserver=2", "scale openshift-oauth-apiserver=1",
				"hostedcluster pausedUntil=" + describe(pc.value),
				"exec probe", "exec cat", "store upload " + snapKey, "exec snapshot-status",
				"store put " + keysKey,
				"exec rm",
				"store put " + manKey,
			}
			if got := fx.j.get(); !slices.Equal(got, want) {
				t.Errorf("actions\n got %q\nwant %q", got, want)
			}
			patches, annotates := fx.hs.writes()
			if len(patches) != 2 || patches[1] != wantPatch(pc.value) || annotates != 0 {
				t.Errorf("HostedCluster patches %q (annotation patches %d), want the deadline then %s", patches, annotates, wantPatch(pc.value))
			}
			wantWrites := slices.Repeat([]string{"update deployments/scale"}, 6)
			if got := writeActions(fx.kube); !slices.Equal(got, wantWrites) {
				t.Errorf("clientset writes %q, want %q", got, wantWrites)
			}
			var wantEvents []string
			for _, st := range Backup() {
				wantEvents = append(wantEvents, "step_started "+st.Name, "step_done "+st.Name)
			}
			if !slices.Equal(events, wantEvents) {
				t.Errorf("events\n got %q\nwant %q", events, wantEvents)
			}

			// The pod: the CA found through the etcd-ca mount; the file removed.
			for _, c := range fx.exec.recorded() {
				if c.Namespace != testHCPNS || c.Pod != "etcd-0" || c.Container != "etcd" {
					t.Errorf("%s ran in %s/%s/%s", c.Op, c.Namespace, c.Pod, c.Container)
				}
			}
			rm, _ := fx.exec.call("rm")
			wantRm := []string{"sh", "-c", cleanupScript, "sh", s.Out.Attempt.Path}
			if !slices.Equal(rm.Cmd, wantRm) || !strings.HasPrefix(s.Out.Attempt.Path, DefaultSnapshotDir+"/hcpsnap-"+s.Run.RunID) {
				t.Errorf("rm command %q, want %q", rm.Cmd, wantRm)
			}

			// The snapshot object holds exactly what cat streamed.
			obj, ok := fx.store.object(snapKey)
			if !ok {
				t.Fatalf("no snapshot object; objects: %v", fx.store.keys())
			}
			etcdSum := hex.EncodeToString(fx.snapshot[len(fx.snapshot)-32:])
			if string(obj.Data) != string(fx.snapshot) {
				t.Errorf("snapshot object differs from the streamed file (%d vs %d bytes)", len(obj.Data), len(fx.snapshot))
			}
			if obj.Put.Metadata[manifest.MetaSnapshotID] != s.Out.Attempt.ID || obj.Put.Metadata[manifest.MetaRunID] != s.Run.RunID {
				t.Errorf("snapshot metadata %v", obj.Put.Metadata)
			}

			// The key bundle.
			checkKeyBundle(t, fx, keysKey, []string{activeKeyName, backupKeyName, "root-ca", "etcd-signer", "sa-signing-key"})

			// The manifest.
			m := readManifest(t, fx, manKey)
			if m.RunID != s.Run.RunID || m.Cluster != testCluster || m.Namespace != testNS || m.HCPNamespace != testHCPNS ||
				m.InfraID != testInfraID || m.OpenShiftVersion != "4.17.2" || m.Online {
				t.Errorf("manifest identity: %+v", m)
			}
			if m.Etcd.Member != "etcd-0" || m.Etcd.Revision != 456 || m.Etcd.TotalKeys != 789 ||
				m.Etcd.TotalSize != int64(len(fx.snapshot)) || m.Etcd.Hash != 2749163127 || m.Etcd.SHA256 != etcdSum {
				t.Errorf("manifest etcd: %+v", m.Etcd)
			}
			if m.Snapshot != (manifest.Object{Bucket: testBucket, Key: snapKey, Size: int64(len(fx.snapshot)), SHA256: sha256Hex(fx.snapshot)}) {
				t.Errorf("manifest snapshot: %+v", m.Snapshot)
			}
			if m.KeyBundle.Key != keysKey || m.KeyBundle.Bucket != testBucket || m.KeyBundle.File != "" || len(m.KeyBundle.Secrets) != 5 {
				t.Errorf("manifest key bundle: %+v", m.KeyBundle)
			}
			tm := m.Times
			if tm.DowntimeStart == nil || tm.DowntimeEnd == nil || !tm.DowntimeStart.Before(*tm.DowntimeEnd) || m.DowntimeSeconds <= 0 {
				t.Fatalf("downtime %v .. %v (%gs)", tm.DowntimeStart, tm.DowntimeEnd, m.DowntimeSeconds)
			}
			if tm.SnapshotSaved == nil || tm.SnapshotSaved.Before(*tm.DowntimeStart) || tm.SnapshotSaved.After(*tm.DowntimeEnd) {
				t.Errorf("snapshot saved at %v, outside the downtime %v .. %v", tm.SnapshotSaved, tm.DowntimeStart, tm.DowntimeEnd)
			}
			if tm.Uploaded == nil || !tm.Uploaded.After(*tm.DowntimeEnd) || !tm.Finished.After(*tm.Uploaded) {
				t.Errorf("times out of order: %+v", tm)
			}
		})
	}
}

// ptrIf turns a recorded original back into the pointer it came from.
func ptrIf(o *Original) *string {
	if o == nil || !o.Present {
		return nil
	}
	return &o.Value
}

func readManifest(t *testing.T, fx *fixture, key string) *manifest.Manifest {
	t.Helper()
	obj, ok := fx.store.object(key)
	if !ok {
		t.Fatalf("no manifest at %s; objects: %v", key, fx.store.keys())
	}
	m, err := manifest.Decode(obj.Data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkKeyBundle asserts that the bundle stored at key holds exactly the
// named Secrets, in order, with their data and role.
func checkKeyBundle(t *testing.T, fx *fixture, key string, names []string) {
	t.Helper()
	obj, ok := fx.store.object(key)
	if !ok {
		t.Fatalf("no key bundle at %s; objects: %v", key, fx.store.keys())
	}
	checkBundleData(t, obj.Data, names)
}

func checkBundleData(t *testing.T, data []byte, names []string) {
	t.Helper()
	secrets, err := manifest.DecodeKeyBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range secrets {
		got = append(got, s.Name)
		wantRole, wantNS := manifest.RoleControlPlane, testHCPNS
		switch s.Name {
		case activeKeyName:
			wantRole, wantNS = manifest.RoleActiveKey, testNS
		case backupKeyName:
			wantRole, wantNS = manifest.RoleBackupKey, testNS
		}
		if s.Namespace != wantNS || s.Annotations[manifest.RoleAnnotation] != wantRole {
			t.Errorf("Secret %s: namespace %s role %q, want %s %q", s.Name, s.Namespace, s.Annotations[manifest.RoleAnnotation], wantNS, wantRole)
		}
		var val string
		for _, v := range s.Data {
			val = string(v)
		}
		if val != secretValues[s.Name] {
			t.Errorf("Secret %s data %q, want %q", s.Name, val, secretValues[s.Name])
		}
	}
	if !slices.Equal(got, names) {
		t.Errorf("key bundle holds %v, want %v", got, names)
	}
	if strings.Contains(string(data), fakeAWSSecretKey) {
		t.Error("key bundle holds a Secret it must not")
	}
}

func TestBackupKeyBundle(t *testing.T) {
	allSecrets := []string{activeKeyName, backupKeyName, "root-ca", "etcd-signer", "sa-signing-key"}
	tests := []struct {
		name     string
		setup    func(t *testing.T, fx *fixture, o *Options)
		wantCode exitcode.Code
		want     []string
		wantPut  s3.PutOptions
		toFile   bool
	}{
		{
			name:    "active and backup keys plus control-plane Secrets, with SSE-KMS",
			setup:   func(_ *testing.T, _ *fixture, o *Options) { o.SSE, o.SSEKMSKeyID = "aws:kms", "alias/hcpsnap" },
			want:    allSecrets,
			wantPut: s3.PutOptions{ContentType: "application/json", SSE: "aws:kms", SSEKMSKeyID: "alias/hcpsnap"},
		},
		{
			name: "no backup key",
			setup: func(_ *testing.T, fx *fixture, _ *Options) {
				fx.hs.hc.Spec.SecretEncryption.AESCBC.BackupKey = nil
			},
			want:    []string{activeKeyName, "root-ca", "etcd-signer", "sa-signing-key"},
			wantPut: s3.PutOptions{ContentType: "application/json"},
		},
		{
			name: "a missing control-plane Secret is left out",
			setup: func(t *testing.T, fx *fixture, _ *Options) {
				if err := fx.kube.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("secrets"), testHCPNS, "etcd-signer"); err != nil {
					t.Fatal(err)
				}
			},
			want:    []string{activeKeyName, backupKeyName, "root-ca", "sa-signing-key"},
			wantPut: s3.PutOptions{ContentType: "application/json"},
		},
		{
			name: "--key-out writes a 0600 file instead of an object",
			setup: func(t *testing.T, _ *fixture, o *Options) {
				o.KeyOut = filepath.Join(t.TempDir(), "keys", "bundle.json")
				if err := os.MkdirAll(filepath.Dir(o.KeyOut), 0o700); err != nil {
					t.Fatal(err)
				}
			},
			want:   allSecrets,
			toFile: true,
		},
		{
			name: "a missing active key fails the run, which is undone",
			setup: func(t *testing.T, fx *fixture, _ *Options) {
				if err := fx.kube.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("secrets"), testNS, activeKeyName); err != nil {
					t.Fatal(err)
				}
			},
			wantCode: exitcode.Restored,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			o := defaultOptions()
			tt.setup(t, fx, &o)
			s := fx.state(o)
			err := fx.execute(s)
			if got := exitcode.Of(err); got != tt.wantCode {
				t.Fatalf("exit code %d, want %d: %v", got, tt.wantCode, err)
			}
			keysKey := "hcpsnap-keys/example/" + s.Out.Timestamp + "/key-bundle.json"
			if tt.wantCode != exitcode.OK {
				checkRestored(t, fx, nil)
				if _, ok := fx.store.object(keysKey); ok {
					t.Error("key bundle stored by a failed step")
				}
				if !strings.Contains(err.Error(), "step "+StepSaveKeys) || !strings.Contains(err.Error(), activeKeyName) {
					t.Errorf("error %q does not name the step and the Secret", err)
				}
				return
			}
			m := readManifest(t, fx, "backups/example/"+s.Out.Timestamp+"/manifest.json")
			if !tt.toFile {
				checkKeyBundle(t, fx, keysKey, tt.want)
				obj, _ := fx.store.object(keysKey)
				if obj.Put.ContentType != tt.wantPut.ContentType || obj.Put.SSE != tt.wantPut.SSE || obj.Put.SSEKMSKeyID != tt.wantPut.SSEKMSKeyID {
					t.Errorf("put options %+v, want %+v", obj.Put, tt.wantPut)
				}
				if m.KeyBundle.Key != keysKey || m.KeyBundle.SSE != tt.wantPut.SSE {
					t.Errorf("manifest key bundle %+v", m.KeyBundle)
				}
				return
			}
			if _, ok := fx.store.object(keysKey); ok || len(fx.store.keys()) != 2 {
				t.Errorf("with --key-out the bucket holds %v", fx.store.keys())
			}
			fi, err := os.Stat(o.KeyOut)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
			}
			data, err := os.ReadFile(o.KeyOut)
			if err != nil {
				t.Fatal(err)
			}
			checkBundleData(t, data, tt.want)
			if m.KeyBundle.File != o.KeyOut || m.KeyBundle.Key != "" || m.KeyBundle.Bucket != "" {
				t.Errorf("manifest key bundle %+v, want the file %s", m.KeyBundle, o.KeyOut)
			}
		})
	}
}

// TestBackupCACert proves the CA detection: the OCP 4.12+ path when the pod
// mounts the etcd-ca folder, the legacy one otherwise, the user's always.
func TestBackupCACert(t *testing.T) {
	tests := []struct {
		name    string
		mount   bool
		flag    string
		want    string
		options func(*Options)
	}{
		{name: "etcd-ca mounted", mount: true, want: CACertPath},
		{name: "legacy pod", mount: false, want: LegacyCACertPath},
		{name: "--etcd-cacert wins", mount: true, flag: "/custom/ca.crt", want: "/custom/ca.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			if err := fx.kube.Tracker().Update(podsGVR, etcdPod(tt.mount), testHCPNS); err != nil {
				t.Fatal(err)
			}
			o := defaultOptions()
			o.Etcd.CACert = tt.flag
			s := fx.state(o)
			if err := fx.execute(s); err != nil {
				t.Fatal(err)
			}
			for _, op := range []string{"endpoint-status", "snapshot-save"} {
				c, ok := fx.exec.call(op)
				i := slices.Index(c.Cmd, "--cacert")
				if !ok || i < 0 || c.Cmd[i+1] != tt.want {
					t.Errorf("%s ran %q, want --cacert %s", op, c.Cmd, tt.want)
				}
			}
		})
	}
}

// TestBackupScaleRetriesOnConflict proves scaling converges through a
// Conflict, in both directions.
func TestBackupScaleRetriesOnConflict(t *testing.T) {
	fx := newFixture(t, nil)
	conflictOnce(fx.kube, "openshift-apiserver")
	s := fx.state(defaultOptions())
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, fx, nil)
	// 3 down and 3 up, plus the one that met the Conflict and was retried.
	if got := len(writeActions(fx.kube)); got != 7 {
		t.Errorf("%d scale updates, want 7: %v", got, writeActions(fx.kube))
	}
	scales := slices.DeleteFunc(fx.j.get(), func(e string) bool { return !strings.HasPrefix(e, "scale ") })
	want := []string{"scale kube-apiserver=0", "scale openshift-apiserver=0", "scale openshift-oauth-apiserver=0",
		"scale kube-apiserver=3", "scale openshift-apiserver=2", "scale openshift-oauth-apiserver=1"}
	if !slices.Equal(scales, want) {
		t.Errorf("scales %q, want %q", scales, want)
	}
}

// TestBackupSnapshotSaveFails proves a failed snapshot leaves the cluster as
// it was: the API comes back first (scale-up, resume), then the partial file
// goes.
func TestBackupSnapshotSaveFails(t *testing.T) {
	for _, pc := range pausedUntilCases {
		t.Run("pausedUntil "+pc.name, func(t *testing.T) {
			fx := newFixture(t, pc.value)
			fx.exec.fail["snapshot-save"] = errors.New("command terminated with exit code 1")
			s := fx.state(defaultOptions())
			// etcdctl leaves its temporary file behind when it fails.
			fx.beforeWrite = func(what string) {
				if what == "scale openshift-oauth-apiserver=0" {
					fx.exec.putFile(DefaultSnapshotDir+"/hcpsnap-"+s.Run.RunID+".db.part", []byte("partial"))
				}
			}

			err := fx.execute(s)

			if got := exitcode.Of(err); got != exitcode.Restored {
				t.Fatalf("exit code %d, want Restored: %v", got, err)
			}
			if !strings.HasPrefix(err.Error(), "step snapshot-save: etcdctl snapshot save") {
				t.Errorf("error %q does not start with the snapshot failure", err)
			}
			checkRestored(t, fx, pc.value)
			want := []string{
				"exec tools", "exec endpoint-status", "exec df",
				"hostedcluster pausedUntil=" + describe(&s.Out.PauseUntil),
				"scale kube-apiserver=0", "scale openshift-apiserver=0", "scale openshift-oauth-apiserver=0",
				"exec snapshot-save",
				"scale kube-apiserver=3", "scale openshift-apiserver=2", "scale openshift-oauth-apiserver=1",
				"hostedcluster pausedUntil=" + describe(pc.value),
				"exec rm",
			}
			if got := fx.j.get(); !slices.Equal(got, want) {
				t.Errorf("actions\n got %q\nwant %q", got, want)
			}
			if keys := fx.store.keys(); len(keys) != 0 {
				t.Errorf("bucket holds %v", keys)
			}
			for _, name := range []string{StepPause, StepScaleDown, StepSnapshotSave, StepScaleUp, StepResume, StepCleanupPodFile} {
				if st := s.Run.StatusOf(name); st != checkpoint.Undone {
					t.Errorf("%s is %s, want undone", name, st)
				}
			}
		})
	}
}

// TestBackupResumeAfterUploadFailure runs a backup whose upload fails, then
// resumes it in a "new process" from the saved checkpoint: the resumed run
// pauses and scales down again, and the cluster ends as it was.
func TestBackupResumeAfterUploadFailure(t *testing.T) {
	fx := newFixture(t, ptr.To("true"))
	fx.exec.fail["cat"] = errors.New("command terminated with exit code 137")
	s := fx.state(defaultOptions())
	if err := fx.execute(s); exitcode.Of(err) != exitcode.Restored {
		t.Fatalf("first run: exit %d: %v", exitcode.Of(err), err)
	}
	checkRestored(t, fx, ptr.To("true"))
	firstOut := *s.Out

	delete(fx.exec.fail, "cat")
	run, out := fx.saver.last(t)
	resumed := fx.state(defaultOptions())
	resumed.Run, resumed.Out = run, out
	mark := len(fx.j.get())
	if err := fx.execute(resumed); err != nil {
		t.Fatalf("resumed run: %v", err)
	}
	checkRestored(t, fx, ptr.To("true"))
	got := fx.j.get()[mark:]
	ts := firstOut.Timestamp
	want := []string{
		"hostedcluster pausedUntil=" + describe(&resumed.Out.PauseUntil),
		"scale kube-apiserver=0", "scale openshift-apiserver=0", "scale openshift-oauth-apiserver=0",
		"exec snapshot-save",
		"scale kube-apiserver=3", "scale openshift-apiserver=2", "scale openshift-oauth-apiserver=1",
		`hostedcluster pausedUntil="true"`,
		"exec probe", "exec cat", "store upload backups/example/" + ts + "/snapshot.db", "exec snapshot-status",
		"store put hcpsnap-keys/example/" + ts + "/key-bundle.json",
		"exec rm",
		"store put backups/example/" + ts + "/manifest.json",
	}
	if !slices.Equal(got, want) {
		t.Errorf("resumed actions\n got %q\nwant %q", got, want)
	}
	if resumed.Out.Timestamp != ts || resumed.Run.RunID != s.Run.RunID {
		t.Errorf("the resumed run changed identity: %s %s", resumed.Out.Timestamp, resumed.Run.RunID)
	}
	// The manifest describes the downtime in which the snapshot was taken.
	m := readManifest(t, fx, "backups/example/"+ts+"/manifest.json")
	tm := m.Times
	if tm.DowntimeStart == nil || tm.DowntimeEnd == nil || tm.SnapshotSaved == nil ||
		tm.SnapshotSaved.Before(*tm.DowntimeStart) || tm.SnapshotSaved.After(*tm.DowntimeEnd) {
		t.Errorf("snapshot saved at %v, outside the recorded downtime %v .. %v", tm.SnapshotSaved, tm.DowntimeStart, tm.DowntimeEnd)
	}
}

func TestBackupOnline(t *testing.T) {
	fx := newFixture(t, nil)
	o := defaultOptions()
	o.Online = true
	s := fx.state(o)
	if err := fx.execute(s); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{StepPause, StepScaleDown, StepScaleUp, StepResume} {
		if st := s.Run.StatusOf(name); st != checkpoint.Skipped {
			t.Errorf("%s is %s, want skipped", name, st)
		}
	}
	if w := writeActions(fx.kube); len(w) != 0 {
		t.Errorf("online backup wrote to the cluster: %v", w)
	}
	if p, u := fx.hs.writes(); len(p) != 0 || u != 0 {
		t.Errorf("online backup changed the HostedCluster: %v, %d annotation patches", p, u)
	}
	for _, e := range fx.j.get() {
		if strings.HasPrefix(e, "scale ") || strings.HasPrefix(e, "hostedcluster ") {
			t.Errorf("online backup did %s", e)
		}
	}
	m := readManifest(t, fx, "backups/example/"+s.Out.Timestamp+"/manifest.json")
	if !m.Online || m.Times.DowntimeStart != nil || m.DowntimeSeconds != 0 {
		t.Errorf("online manifest: online=%v downtime %v %g", m.Online, m.Times.DowntimeStart, m.DowntimeSeconds)
	}
	if obj, ok := fx.store.object(m.Snapshot.Key); !ok || string(obj.Data) != string(fx.snapshot) {
		t.Error("online backup lacks the snapshot")
	}
}

// TestPreflightRefusals proves every precondition refuses before anything
// is changed anywhere.
func TestPreflightRefusals(t *testing.T) {
	otherRun := func() string {
		r := checkpoint.New("backup", checkpoint.Cluster{Namespace: testNS, Name: testCluster}, "other-host", []string{StepPreflight}, t0)
		data, _ := json.Marshal(r)
		return string(data)
	}
	updatePod := func(t *testing.T, fx *fixture, mut func(*corev1.Pod)) {
		p := etcdPod(true)
		mut(p)
		if err := fx.kube.Tracker().Update(podsGVR, p, testHCPNS); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, fx *fixture, o *Options)
		wantErr string
	}{
		{"HostedCluster missing", func(_ *testing.T, fx *fixture, _ *Options) { fx.hs.hc = nil }, "HostedCluster clusters/example not found"},
		{"unmanaged etcd", func(_ *testing.T, fx *fixture, _ *Options) {
			fx.hs.hc.Spec.Etcd.ManagementType = hyperv1.Unmanaged
		}, `"Unmanaged" etcd`},
		{"another run holds the cluster", func(_ *testing.T, fx *fixture, _ *Options) {
			fx.hs.hc.Annotations = map[string]string{RunAnnotation: otherRun()}
		}, "is held by hcpsnap run"},
		{"unreadable lock annotation", func(_ *testing.T, fx *fixture, _ *Options) {
			fx.hs.hc.Annotations = map[string]string{RunAnnotation: "{not json"}
		}, "annotation " + RunAnnotation},
		{"invalid pausedUntil", func(_ *testing.T, fx *fixture, _ *Options) {
			fx.hs.hc.Spec.PausedUntil = ptr.To("tomorrow")
		}, `spec.pausedUntil "tomorrow"`},
		{"member pod missing", func(t *testing.T, fx *fixture, _ *Options) {
			if err := fx.kube.Tracker().Delete(podsGVR, testHCPNS, "etcd-0"); err != nil {
				t.Fatal(err)
			}
		}, "etcd pod etcd-0 not found"},
		{"member not Ready", func(t *testing.T, fx *fixture, _ *Options) {
			updatePod(t, fx, func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse })
		}, "is not Running and Ready"},
		{"member not Running", func(t *testing.T, fx *fixture, _ *Options) {
			updatePod(t, fx, func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })
		}, "is not Running and Ready (phase Pending)"},
		{"no such container", func(_ *testing.T, _ *fixture, o *Options) { o.Container = "etcd-metrics" }, `has no container "etcd-metrics"`},
		{"etcdctl fails", func(_ *testing.T, fx *fixture, _ *Options) {
			fx.exec.fail["endpoint-status"] = errors.New("context deadline exceeded")
		}, "does not answer `etcdctl endpoint status`"},
		{"no room for the snapshot", func(_ *testing.T, fx *fixture, _ *Options) { fx.exec.availKB = 100 }, "needs about 0 MiB: stream the snapshot with --via stream"},
		{"missing Deployment", func(t *testing.T, fx *fixture, _ *Options) {
			if err := fx.kube.Tracker().Delete(deploymentsGVR, testHCPNS, "openshift-apiserver"); err != nil {
				t.Fatal(err)
			}
		}, "Deployment openshift-apiserver not found"},
		{"replicas already 0", func(t *testing.T, fx *fixture, _ *Options) {
			obj, _ := fx.kube.Tracker().Get(deploymentsGVR, testHCPNS, "kube-apiserver")
			d := obj.(*appsv1.Deployment).DeepCopy()
			d.Spec.Replicas = ptr.To[int32](0)
			if err := fx.kube.Tracker().Update(deploymentsGVR, d, testHCPNS); err != nil {
				t.Fatal(err)
			}
		}, "already has 0 replicas"},
		{"bucket not writable", func(_ *testing.T, fx *fixture, _ *Options) {
			fx.store = newFailingStore(fx.j, "CheckWritable", errors.New("AccessDenied: s3:PutObject"))
		}, "AccessDenied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			o := defaultOptions()
			tt.setup(t, fx, &o)
			s := fx.state(o)

			err := fx.execute(s)

			if got := exitcode.Of(err); got != exitcode.Precondition {
				t.Fatalf("exit code %d, want Precondition: %v", got, err)
			}
			if !strings.HasPrefix(err.Error(), "step preflight: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tt.wantErr)
			}
			if w := writeActions(fx.kube); len(w) != 0 {
				t.Errorf("clientset writes: %v", w)
			}
			if p, u := fx.hs.writes(); len(p) != 0 || u != 0 {
				t.Errorf("HostedCluster patches %v, annotation patches %d", p, u)
			}
			if w := append(fx.store.methodCalls("Put"), fx.store.methodCalls("Upload")...); len(w) != 0 {
				t.Errorf("bucket writes: %v", w)
			}
			for _, op := range fx.exec.ops() {
				if op != "tools" && op != "endpoint-status" && op != "df" {
					t.Errorf("ran %s in the pod", op)
				}
			}
			for name, st := range statuses(s.Run) {
				if want := checkpoint.Pending; name == StepPreflight {
					if st != checkpoint.Failed {
						t.Errorf("preflight is %s, want failed", st)
					}
				} else if st != want {
					t.Errorf("%s is %s, want pending", name, st)
				}
			}
		})
	}
}

// TestPreflightAPIError proves that an API error other than NotFound is not
// mistaken for a refusal and reaches the caller unchanged.
func TestPreflightAPIError(t *testing.T) {
	fx := newFixture(t, nil)
	s := fx.state(defaultOptions())
	s.Clients.HyperShift = erroringHyperShift{fx.hs}
	err := fx.execute(s)
	if !apierrors.IsServiceUnavailable(err) {
		t.Errorf("error %v does not wrap the API error", err)
	}
	if w := writeActions(fx.kube); len(w) != 0 {
		t.Errorf("clientset writes: %v", w)
	}
}

type erroringHyperShift struct{ *fakeHyperShift }

func (erroringHyperShift) GetHostedCluster(_ context.Context, _, name string) (*hyperv1.HostedCluster, error) {
	return nil, apierrors.NewServiceUnavailable("etcdserver: leader changed")
}
