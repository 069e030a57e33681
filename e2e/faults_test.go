//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/kubectl/pkg/util/podutils"
	"k8s.io/utils/ptr"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hcpsnap/hcpsnap/e2e/nodeagent"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// event is one NDJSON line of `hcpsnap -o json backup`.
type event struct {
	MessageType string `json:"message_type"`
	Step        string `json:"step"`
	Error       string `json:"error"`
}

// running is an hcpsnap process whose events the test watches as they come.
type running struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	events []event
	seen   chan struct{}
	stderr bytes.Buffer
	stdout bytes.Buffer
	done   chan struct{}
	code   int
	// stateDir holds the run files, scanned for secrets at the end.
	stateDir string
}

// startHcpsnap starts the built binary like hcpsnap(), without waiting.
func (e *testEnv) startHcpsnap(t *testing.T, stateDir string, extraEnv []string, args ...string) *running {
	t.Helper()
	bin := os.Getenv("HCPSNAP_BIN")
	if bin == "" {
		t.Fatal("HCPSNAP_BIN is not set: run the e2e tests through 'make test'")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HCPSNAP_STATE_DIR="+stateDir)
	for k, v := range e.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	r := &running{cmd: cmd, seen: make(chan struct{}, 1000), done: make(chan struct{}), stateDir: stateDir}
	cmd.Stderr = &r.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			r.mu.Lock()
			r.stdout.Write(append(line, '\n'))
			var ev event
			if json.Unmarshal(line, &ev) == nil {
				r.events = append(r.events, ev)
			}
			r.mu.Unlock()
			select {
			case r.seen <- struct{}{}:
			default: // a wakeup is already pending
			}
		}
		err := cmd.Wait()
		r.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.code = 128 + int(ws.Signal())
			}
		}
		close(r.done)
	}()
	return r
}

// waitEvent blocks until an event matches, the process ends (fails the
// test) or a minute passes.
func (r *running) waitEvent(t *testing.T, what string, match func(event) bool) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	idx := 0
	for {
		if r.seenSince(&idx, match) {
			return
		}
		select {
		case <-r.seen:
		case <-r.done:
			if r.seenSince(&idx, match) {
				return
			}
			t.Fatalf("hcpsnap ended (exit %d) before %s\nstderr:\n%s", r.code, what, r.stderr.String())
		case <-deadline:
			t.Fatalf("no %s within 2 minutes", what)
		}
	}
}

// seenSince reports whether an event from *idx on matches, moving *idx past
// the events looked at.
func (r *running) seenSince(idx *int, match func(event) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ; *idx < len(r.events); *idx++ {
		if match(r.events[*idx]) {
			return true
		}
	}
	return false
}

func (r *running) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Minute):
		_ = r.cmd.Process.Kill()
		t.Fatal("hcpsnap did not end within 10 minutes")
	}
	record(r.stdout.String(), r.stderr.String())
	recordDir(r.stateDir)
	return r.code
}

func stepDone(step string) func(event) bool {
	return func(e event) bool { return e.MessageType == "step_done" && e.Step == step }
}

func stepStarted(step string) func(event) bool {
	return func(e event) bool { return e.MessageType == "step_started" && e.Step == step }
}

func uploadProgress(e event) bool { return e.MessageType == "upload_progress" }

// invariants checks what must hold after any run has ended: the cluster as
// it was, no pod file, no unfinished multipart upload, no lock, and under
// prefix either no object at all or a complete, verified backup.
func (e *testEnv) invariants(t *testing.T, before clusterState, prefix string) {
	t.Helper()
	e.checkClusterAsBefore(t, before)
	e.checkNoPodFile(t)
	e.checkNoMultipartUploads(t)
	hc, err := e.hyper.GetHostedCluster(context.Background(), e.namespace, e.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if v, held := hc.Annotations["hcpsnap.io/backup-run"]; held {
		t.Errorf("the run still holds the cluster: %.120s", v)
	}
	keys := e.listObjects(t, prefix+"/")
	var manifests []string
	for _, k := range keys {
		if strings.HasSuffix(k, "/manifest.json") {
			manifests = append(manifests, k)
		}
	}
	for _, k := range keys {
		if strings.HasSuffix(k, "/snapshot.db") && !contains(manifests, strings.TrimSuffix(k, "snapshot.db")+"manifest.json") {
			t.Errorf("snapshot %s has no manifest: a half-written backup", k)
		}
	}
	for _, k := range manifests {
		m := e.readManifest(t, "s3://"+e.bucket+"/"+k)
		e.checkSnapshot(t, m)
		e.checkKeyBundle(t, m)
	}
}

// resume finishes the cluster's unfinished run from a fresh state folder, as
// a second CI runner would: its state comes from the HostedCluster.
func (e *testEnv) resume(t *testing.T, stateDir string) {
	t.Helper()
	res := e.hcpsnap(t, stateDir, "-o", "json", "backup", "--resume")
	if res.code != 0 {
		t.Fatalf("resume exit %d\nstderr:\n%s", res.code, res.stderr)
	}
}

func TestKillAndResume(t *testing.T) {
	env := loadEnv(t)
	type point struct {
		name  string
		match func(event) bool
		delay time.Duration
	}
	var points []point
	for _, step := range []string{"preflight", "pause-reconciliation", "scale-down-apiservers", "snapshot-save",
		"scale-up-apiservers", "resume-reconciliation", "upload-snapshot", "save-encryption-key", "cleanup-pod-file", "write-manifest"} {
		points = append(points, point{"after " + step, stepDone(step), 0})
	}
	points = append(points,
		point{"in snapshot-save", stepStarted("snapshot-save"), 150 * time.Millisecond},
		point{"in upload-snapshot", uploadProgress, 0})
	for _, via := range vias {
		for i, p := range points {
			t.Run(via+" "+p.name, func(t *testing.T) {
				before := env.state(t)
				prefix := fmt.Sprintf("kill-%s-%02d", via, i)
				r := env.startHcpsnap(t, t.TempDir(), nil, "-o", "json", "backup", "--via", via, "--prefix", prefix)
				r.waitEvent(t, p.name, p.match)
				time.Sleep(p.delay)
				_ = r.cmd.Process.Signal(syscall.SIGKILL)
				if code := r.wait(t); code != 128+int(syscall.SIGKILL) && code != 0 {
					t.Fatalf("killed run exit %d", code)
				}
				env.resume(t, t.TempDir()) // another working folder: state from the cluster
				env.invariants(t, before, prefix)
				if got := env.listObjects(t, prefix+"/"); len(got) == 0 {
					t.Fatal("the resumed run left no backup")
				}
			})
		}
	}
}

func TestSignalsWhileTheAPIIsDown(t *testing.T) {
	env := loadEnv(t)
	for i, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		// One signal per way, so that both meet it with the API down.
		via := vias[i%len(vias)]
		t.Run(sig.String()+" via "+via, func(t *testing.T) {
			before := env.state(t)
			prefix := "signal-" + strconv.Itoa(int(sig))
			r := env.startHcpsnap(t, t.TempDir(), nil, "-o", "json", "backup", "--via", via, "--prefix", prefix)
			r.waitEvent(t, "scale-down done", stepDone("scale-down-apiservers"))
			_ = r.cmd.Process.Signal(sig)
			if code := r.wait(t); exitcode.Code(code) != exitcode.Interrupted {
				t.Fatalf("exit %d, want 130\nstderr:\n%s", code, r.stderr.String())
			}
			if last := lastLine(r.stderr.String()); !strings.Contains(last, "interrupted") || !strings.Contains(last, "undone") {
				t.Errorf("last message %q does not say it was interrupted and undone", last)
			}
			env.invariants(t, before, prefix)
			if got := env.listObjects(t, prefix+"/"); len(got) != 0 {
				t.Fatalf("an interrupted run left objects: %v", got)
			}
		})
	}
}

func TestSecondRunIsRefused(t *testing.T) {
	env := loadEnv(t)
	before := env.state(t)
	r := env.startHcpsnap(t, t.TempDir(), nil, "-o", "json", "backup", "--prefix", "first")
	r.waitEvent(t, "pause done", stepDone("pause-reconciliation"))
	second := env.hcpsnap(t, t.TempDir(), "backup", "--prefix", "second")
	if exitcode.Code(second.code) != exitcode.Precondition || !strings.Contains(lastLine(second.stderr), "held by hcpsnap run") {
		t.Fatalf("second run: exit %d, %q; want 3 and 'held by hcpsnap run'", second.code, lastLine(second.stderr))
	}
	if code := r.wait(t); code != 0 {
		t.Fatalf("first run exit %d:\n%s", code, r.stderr.String())
	}
	env.invariants(t, before, "first")
	if got := env.listObjects(t, "second/"); len(got) != 0 {
		t.Fatalf("the refused run wrote %v", got)
	}
}

func TestDeadMansSwitch(t *testing.T) {
	env := loadEnv(t)
	before := env.state(t)
	r := env.startHcpsnap(t, t.TempDir(), nil, "-o", "json", "backup", "--prefix", "deadman", "--pause-timeout", "1m")
	r.waitEvent(t, "scale-down done", stepDone("scale-down-apiservers"))
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	r.wait(t)
	if got := env.replicas(t, "kube-apiserver"); got != 0 {
		t.Fatalf("kube-apiserver at %d replicas right after the kill, want 0", got)
	}
	// Nothing resumes the run: when the deadline passes, HyperShift (here its
	// stand-in) reconciles again and brings the API back by itself.
	for d, n := range before.replicas {
		waitReplicas(t, env, d, n, 2*time.Minute)
		env.waitReady(t, d, n)
	}
	hc, err := env.hyper.GetHostedCluster(context.Background(), env.namespace, env.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if p := hc.Spec.PausedUntil; p != nil {
		until, err := time.Parse(time.RFC3339, *p)
		if err != nil || until.After(time.Now()) {
			t.Fatalf("pausedUntil %q still pauses the cluster", *p)
		}
	}
	env.resume(t, t.TempDir())
	env.invariants(t, before, "deadman")
}

func TestS3OutageDuringUpload(t *testing.T) {
	env := loadEnv(t)
	for _, via := range vias {
		t.Run("via "+via, func(t *testing.T) { s3OutageDuringUpload(t, env, via) })
	}
}

func s3OutageDuringUpload(t *testing.T, env *testEnv, via string) {
	// The stream flows into the bucket from snapshot-save on, while the
	// API comes back; exec's upload starts in upload-snapshot.
	at, match := "upload progress", uploadProgress
	if via == "stream" {
		at, match = "snapshot-save done", stepDone("snapshot-save")
	}
	env.backupWithFault(t, faultRun{
		prefix: "s3down-" + via, args: []string{"--part-size-mib", "5", "--via", via},
		at: at, match: match,
		fault: func(t *testing.T) { env.localenv(t, "stop", "minio") },
		repair: func(t *testing.T) {
			env.localenv(t, "start", "minio")
			env.waitS3(t, env.vars["AWS_SECRET_ACCESS_KEY"])
		},
		want: []exitcode.Code{exitcode.Restored},
		check: func(t *testing.T, r *running) {
			if last := lastLine(r.stderr.String()); !strings.Contains(last, "--resume") {
				t.Errorf("last message %q does not say how to finish", last)
			}
		},
	})
}

func TestCredentialsRevokedMidRun(t *testing.T) {
	env := loadEnv(t)
	// The S3 server's secret is rotated while the API servers come back:
	// hcpsnap's credentials are no longer valid when the upload starts.
	env.backupWithFault(t, faultRun{
		prefix: "revoked",
		at:     "snapshot-save done", match: stepDone("snapshot-save"),
		fault:  func(t *testing.T) { env.setS3Secret(t, "rotated-secret-key-0123456789") },
		repair: func(t *testing.T) { env.setS3Secret(t, env.vars["AWS_SECRET_ACCESS_KEY"]) },
		want:   []exitcode.Code{exitcode.Restored},
		check: func(t *testing.T, r *running) {
			if last := lastLine(r.stderr.String()); !strings.Contains(last, "credentials") {
				t.Errorf("last message %q does not name the credentials", last)
			}
		},
	})
}

// setS3Secret restarts the S3 server with another secret key for the same
// access key, as a credential rotation would.
func (e *testEnv) setS3Secret(t *testing.T, secret string) {
	t.Helper()
	e.localenv(t, "stop", "minio")
	p := filepath.Join(e.vars["LOCALENV_DIR"], "pids", "minio.json")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	envs := spec["env"].([]any)
	for i, v := range envs {
		if strings.HasPrefix(v.(string), "MINIO_ROOT_PASSWORD=") {
			envs[i] = "MINIO_ROOT_PASSWORD=" + secret
		}
	}
	data, _ = json.Marshal(spec)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e.localenv(t, "start", "minio")
	e.waitS3(t, secret)
}

func TestExecStreamCut(t *testing.T) {
	env := loadEnv(t)
	pod := env.hcpNamespace + "/etcd-0"
	cuts := []struct {
		name string
		cut  nodeagent.CutExec
		// want is the exit code of the run with the fault: a snapshot-save
		// cut before etcd fixed the revision is undone; a cut upload stream
		// is read on from where it stopped.
		want exitcode.Code
	}{
		// `until=$2` is in the script that starts etcdctl and waits for
		// its first byte, and in no other.
		{"during snapshot-save", nodeagent.CutExec{Pod: pod, Match: "until=$2", AfterMillis: 1}, exitcode.Restored},
		{"during upload", nodeagent.CutExec{Pod: pod, Match: "head -c", AfterBytes: 20 << 20}, exitcode.OK},
	}
	for i, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			before := env.state(t)
			prefix := fmt.Sprintf("cut-%d", i)
			env.setFaults(t, nodeagent.Faults{CutExec: []nodeagent.CutExec{c.cut}})
			stateDir := t.TempDir()
			res := env.hcpsnap(t, stateDir, "backup", "--via", "exec", "--prefix", prefix)
			env.setFaults(t, nodeagent.Faults{})
			if exitcode.Code(res.code) != c.want {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", res.code, c.want, res.stderr)
			}
			if c.want != exitcode.OK {
				// A failed run ended with the cluster restored and the lock
				// released: it is resumed from its own run file.
				env.resume(t, stateDir)
			}
			env.invariants(t, before, prefix)
		})
	}
}

func TestEtcdMemberKilledDuringSnapshot(t *testing.T) {
	env := loadEnv(t)
	for _, via := range vias {
		t.Run("via "+via, func(t *testing.T) { memberKilledDuringSnapshot(t, env, via) })
	}
}

func memberKilledDuringSnapshot(t *testing.T, env *testEnv, via string) {
	env.backupWithFault(t, faultRun{
		prefix: "memberkill-" + via, args: []string{"--via", via},
		at: "snapshot-save started", match: stepStarted("snapshot-save"),
		fault: func(t *testing.T) {
			time.Sleep(100 * time.Millisecond)
			killEtcdMember(t, "etcd-0")
		},
		repair: func(t *testing.T) { env.waitPodReady(t, "etcd-0") },
		want:   []exitcode.Code{exitcode.OK, exitcode.Restored},
	})
}

func TestAPIServerRestartMidRun(t *testing.T) {
	env := loadEnv(t)
	env.backupWithFault(t, faultRun{
		prefix: "apirestart",
		at:     "snapshot-save started", match: stepStarted("snapshot-save"),
		fault: func(t *testing.T) {
			env.localenv(t, "stop", "kube-apiserver")
			env.localenv(t, "start", "kube-apiserver")
		},
		want: []exitcode.Code{exitcode.OK, exitcode.Restored},
	})
}

func TestEtcdPodNotReadyAtStart(t *testing.T) {
	env := loadEnv(t)
	before := env.state(t)
	env.setFaults(t, nodeagent.Faults{NotReady: []string{env.hcpNamespace + "/etcd-0"}})
	defer func() {
		env.setFaults(t, nodeagent.Faults{})
		env.waitPodReady(t, "etcd-0")
	}()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := env.kube.CoreV1().Pods(env.hcpNamespace).Get(ctx, "etcd-0", metav1.GetOptions{})
		return err == nil && !podutils.IsPodReady(p), nil
	})
	if err != nil {
		t.Fatal("etcd-0 never became not Ready")
	}
	res := env.hcpsnap(t, t.TempDir(), "backup", "--prefix", "notready")
	if exitcode.Code(res.code) != exitcode.Precondition || !strings.Contains(lastLine(res.stderr), "etcd-0") || !strings.Contains(lastLine(res.stderr), "--member") {
		t.Fatalf("exit %d, %q; want 3 naming etcd-0 and --member", res.code, lastLine(res.stderr))
	}
	env.invariants(t, before, "notready")
	if got := env.listObjects(t, "notready/"); len(got) != 0 {
		t.Fatalf("a refused run wrote %v", got)
	}
}

// checkClusterAsBefore checks that pausedUntil and the API Deployments'
// replicas are what they were, and waits until the Deployments are ready.
func (e *testEnv) checkClusterAsBefore(t *testing.T, before clusterState) {
	t.Helper()
	after := e.state(t)
	if !equalPtr(before.pausedUntil, after.pausedUntil) {
		t.Errorf("pausedUntil %s, want %s", deref(after.pausedUntil), deref(before.pausedUntil))
	}
	for d, n := range before.replicas {
		if after.replicas[d] != n {
			t.Errorf("Deployment %s has %d replicas, want %d", d, after.replicas[d], n)
		}
		e.waitReady(t, d, n)
	}
}

// ---------------------------------------------------------------------------

// faultRun is a backup with a fault: the fault strikes when the event match
// (named at) is seen, repair undoes it once the run has ended, and the run
// ends with one of want. check looks at the ended run.
type faultRun struct {
	prefix string
	args   []string // more backup flags
	at     string
	match  func(event) bool
	fault  func(t *testing.T)
	repair func(t *testing.T)
	want   []exitcode.Code
	check  func(t *testing.T, r *running)
}

// backupWithFault runs f; a run that did not succeed is then finished with
// --resume from its own run file, and the invariants must hold.
func (e *testEnv) backupWithFault(t *testing.T, f faultRun) {
	t.Helper()
	before := e.state(t)
	stateDir := t.TempDir()
	r := e.startHcpsnap(t, stateDir, nil, append([]string{"-o", "json", "backup", "--prefix", f.prefix}, f.args...)...)
	r.waitEvent(t, f.at, f.match)
	f.fault(t)
	code := r.wait(t)
	if f.repair != nil {
		f.repair(t)
	}
	if !slices.Contains(f.want, exitcode.Code(code)) {
		t.Fatalf("exit %d, want one of %v\nstderr:\n%s", code, f.want, r.stderr.String())
	}
	if f.check != nil {
		f.check(t, r)
	}
	if code != 0 {
		e.resume(t, stateDir)
	}
	e.invariants(t, before, f.prefix)
}

func (e *testEnv) localenv(t *testing.T, args ...string) {
	t.Helper()
	bin := filepath.Join(filepath.Dir(os.Getenv("HCPSNAP_BIN")), "localenv")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "LOCALENV_DIR="+e.vars["LOCALENV_DIR"])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("localenv %v: %v: %s", args, err, out)
	}
}

// waitS3 waits until the S3 server answers requests signed with secret.
func (e *testEnv) waitS3(t *testing.T, secret string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.s3Client(secret).HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(e.bucket)})
		return err == nil, nil
	})
	if err != nil {
		t.Fatal("the S3 server did not come back")
	}
}

func (e *testEnv) setFaults(t *testing.T, f nodeagent.Faults) {
	t.Helper()
	if err := nodeagent.WriteFaults(filepath.Join(e.vars["LOCALENV_DIR"], "nodeagent"), f); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) waitPodReady(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.kube.CoreV1().Pods(e.hcpNamespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil && podutils.IsPodReady(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s not Ready again", name)
	}
}

// killEtcdMember SIGKILLs the etcd process of a member, as a crash would.
func killEtcdMember(t *testing.T, member string) {
	t.Helper()
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cl), "\x00")
		if len(args) == 0 || !strings.HasSuffix(args[0], "/etcd") {
			continue
		}
		// The member's name is in its environment (ETCD_NAME), as HyperShift configures it.
		environ, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		vars := strings.Split(string(environ), "\x00")
		if err == nil && contains(vars, "ETCD_NAME="+member) && contains(vars, "NAMESPACE="+loadEnv(t).hcpNamespace) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no etcd process of %s found", member)
}

// TestS3LostAfterUpload: the S3 server goes away right after the upload,
// so the key bundle or the manifest cannot be stored. The run undoes what is
// left (the pod file) and exits Restored; once the server is back, --resume
// finishes with the object already uploaded: no new snapshot, and a
// manifest that describes exactly that object.
func TestS3LostAfterUpload(t *testing.T) {
	env := loadEnv(t)
	before := env.state(t)
	stateDir := t.TempDir()
	r := env.startHcpsnap(t, stateDir, nil, "-o", "json", "backup", "--prefix", "s3lost")
	r.waitEvent(t, "upload-snapshot done", stepDone("upload-snapshot"))
	// Hold the process while the server goes, so that the next store call
	// is sure to find it gone.
	_ = r.cmd.Process.Signal(syscall.SIGSTOP)
	env.localenv(t, "stop", "minio")
	_ = r.cmd.Process.Signal(syscall.SIGCONT)
	code := r.wait(t)
	env.localenv(t, "start", "minio")
	env.waitS3(t, env.vars["AWS_SECRET_ACCESS_KEY"])
	if exitcode.Code(code) != exitcode.Restored {
		t.Fatalf("exit %d, want %d\nstderr:\n%s", code, exitcode.Restored, r.stderr.String())
	}
	if last := lastLine(r.stderr.String()); !strings.Contains(last, "--resume") {
		t.Errorf("last message %q does not say how to finish", last)
	}
	uploaded := env.listObjects(t, "s3lost/")
	res := env.hcpsnap(t, stateDir, "-o", "json", "backup", "--resume")
	if res.code != 0 {
		t.Fatalf("resume exit %d\nstderr:\n%s", res.code, res.stderr)
	}
	for _, line := range strings.Split(res.stdout, "\n") {
		var ev event
		if json.Unmarshal([]byte(line), &ev) == nil && ev.MessageType == "step_started" &&
			(ev.Step == "snapshot-save" || ev.Step == "scale-down-apiservers" || ev.Step == "upload-snapshot") {
			t.Errorf("the resume ran %s again: the uploaded snapshot is the backup's", ev.Step)
		}
	}
	if len(uploaded) != 1 || !strings.HasSuffix(uploaded[0], "/snapshot.db") {
		t.Errorf("before the resume the bucket held %v, want the one uploaded snapshot", uploaded)
	}
	env.invariants(t, before, "s3lost")
}

// runAnnotation is the lock and checkpoint hcpsnap keeps on the HostedCluster.
const runAnnotation = "hcpsnap.io/backup-run"

// annotationOf is CEL for the run annotation of obj, "" when absent.
func annotationOf(obj string) string {
	return "(has(" + obj + ".metadata.annotations) && '" + runAnnotation + "' in " + obj + ".metadata.annotations ? " +
		obj + ".metadata.annotations['" + runAnnotation + "'] : '')"
}

// refuseRunRecords installs a ValidatingAdmissionPolicy that refuses every
// change of the run annotation once it records scale-down-apiservers as
// done: from then on hcpsnap can no longer write its checkpoint to the
// HostedCluster (nor release the lock), while its patches of
// spec.pausedUntil still pass. It returns the function that removes it
// (once, however often it is called).
func (e *testEnv) refuseRunRecords(t *testing.T) func() {
	t.Helper()
	ctx := context.Background()
	name := "e2e-refuse-run-records"
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{
				{RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Update},
					Rule: admissionv1.Rule{APIGroups: []string{"hypershift.openshift.io", ""}, APIVersions: []string{"*"},
						Resources: []string{"hostedclusters", "configmaps"}},
				}},
			}},
			Validations: []admissionv1.Validation{{
				Expression: "!" + annotationOf("oldObject") + ".contains('\"name\":\"scale-down-apiservers\",\"status\":\"done\"') || " +
					annotationOf("object") + " == " + annotationOf("oldObject"),
				Message: "e2e: the run annotation is frozen",
			}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
		},
	}
	api := e.kube.AdmissionregistrationV1()
	if _, err := api.ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	remove := func() {
		_ = api.ValidatingAdmissionPolicyBindings().Delete(ctx, name, metav1.DeleteOptions{})
		_ = api.ValidatingAdmissionPolicies().Delete(ctx, name, metav1.DeleteOptions{})
	}

	// The policy takes effect a moment after it is created: probe it with
	// a dry-run change of a ConfigMap that carries such an annotation.
	probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.namespace,
		Annotations: map[string]string{runAnnotation: `{"steps":[{"name":"scale-down-apiservers","status":"done"}]}`}}}
	if _, err := e.kube.CoreV1().ConfigMaps(e.namespace).Create(ctx, probe, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		remove()
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"annotations":{"` + runAnnotation + `":"changed"}}}`)
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.kube.CoreV1().ConfigMaps(e.namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		return apierrors.IsInvalid(err) || apierrors.IsForbidden(err), nil
	})
	if err != nil {
		remove()
		t.Fatal("the ValidatingAdmissionPolicy did not take effect within a minute")
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			remove()
			// Wait until the HostedCluster accepts the writes again.
			_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := e.kube.CoreV1().ConfigMaps(e.namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
				return err == nil, nil
			})
			_ = e.kube.CoreV1().ConfigMaps(e.namespace).Delete(ctx, name, metav1.DeleteOptions{})
		})
	}
}

// TestHostedClusterWriteRefused: the HostedCluster stops accepting
// hcpsnap's records right after the API went down. The undo must still
// bring the API back and put pausedUntil back, then exit 5 saying that the
// run could not be recorded and that --resume finishes it; once the writes
// are accepted again, --resume finishes the backup and releases the lock.
func TestHostedClusterWriteRefused(t *testing.T) {
	env := loadEnv(t)
	before := env.state(t)
	start := time.Now()
	allow := env.refuseRunRecords(t)
	defer allow()
	t.Logf("policy in effect after %s", time.Since(start).Round(time.Millisecond))
	stateDir := t.TempDir()
	res := env.hcpsnap(t, stateDir, "-o", "json", "backup", "--prefix", "refused")
	t.Logf("refused run ended after %s", time.Since(start).Round(time.Millisecond))
	if exitcode.Code(res.code) != exitcode.ManualAction {
		t.Fatalf("exit %d, want %d\nstderr:\n%s", res.code, exitcode.ManualAction, res.stderr)
	}
	last := lastLine(res.stderr)
	for _, want := range []string{"could not be recorded", "--resume", "frozen"} {
		if !strings.Contains(last, want) {
			t.Errorf("last message %q lacks %q", last, want)
		}
	}
	// The service came back although nothing could be recorded.
	env.checkClusterAsBefore(t, before)
	hc, err := env.hyper.GetHostedCluster(context.Background(), env.namespace, env.cluster)
	if err != nil {
		t.Fatal(err)
	}
	if _, held := hc.Annotations[runAnnotation]; !held {
		t.Errorf("the lock is gone, although the run could not record its end")
	}
	allow()
	t.Logf("policy removed after %s", time.Since(start).Round(time.Millisecond))
	resumed := env.hcpsnap(t, stateDir, "-o", "json", "backup", "--resume")
	if resumed.code != 0 {
		t.Fatalf("resume exit %d\nstderr:\n%s", resumed.code, resumed.stderr)
	}
	t.Logf("resumed after %s", time.Since(start).Round(time.Millisecond))
	env.invariants(t, before, "refused")
	if got := env.listObjects(t, "refused/"); len(got) == 0 {
		t.Fatal("the resumed run left no backup")
	}
}
