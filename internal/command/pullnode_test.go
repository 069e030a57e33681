package command

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

const testImage = "quay.io/hcpsnap/hcpsnap@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestPullNodeBadInput: each invalid value of each flag is one line and exit
// 2, before any client is built (the kubeconfig and bucket here do not
// exist, so going further would fail otherwise).
func TestPullNodeBadInput(t *testing.T) {
	ok := []string{"pull-node", "--node", "master-0", "--image", testImage, "--bucket", "bkt"}
	with := func(extra ...string) []string { return append(append([]string{}, ok...), extra...) }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"pull-node", "--image", testImage, "--bucket", "bkt"}, "--node is required"},
		{with("--node", "Master_0"), `--node "Master_0" is not a valid node name`},
		{with("--node", "master-0;reboot"), "is not a valid node name"},
		{with("--target-dir", "relative/dir"), "--target-dir \"relative/dir\" is not an absolute path"},
		{with("--target-dir", "/etc/etcd"), "outside the allowed places"},
		{with("--target-dir", "/var/lib/etcd"), "/var/lib/etcd"},
		{with("--target-dir", "/tmp/etcd"), "--allow-tmpfs"},
		{with("--target-dir", "/home/core/../../etc"), "not a clean path"},
		{with("--target-dir", ""), "--target-dir is empty"},
		{[]string{"pull-node", "--node", "master-0", "--bucket", "bkt"}, "--image is required"},
		{with("--image", "quay.io/hcpsnap/hcpsnap:latest"), "--image"},
		{with("--image", "quay.io/hcpsnap/hcpsnap@sha256:abc"), "--image"},
		{with("--pod-namespace", "Not A Namespace"), "--pod-namespace"},
		{with("--pod-deadline", "10s"), "--pod-deadline 10s is too short"},
		{with("--pod-deadline", "soon"), "pod-deadline"},
		{with("--wait-timeout", "0s"), "--wait-timeout 0s must be a positive duration"},
		{with("--undo-timeout", "-1s"), "--undo-timeout -1s must be a positive duration"},
		{[]string{"pull-node", "--node", "master-0", "--image", testImage}, "--bucket is required"},
		{with("--bucket", "Not_A_Bucket"), "bucket"},
		{with("--part-size-mib", "1"), "--part-size-mib 1 is out of range"},
		{with("--concurrency", "0"), "--concurrency 0 is out of range"},
		{with("--s3-ca-bundle", "/ca.pem", "--s3-insecure-skip-verify"), "contradict each other"},
		{with("extra"), "takes no arguments"},
		{append([]string{"-o", "markdown"}, ok...), "markdown"},
		{[]string{"backups", "--bucket", "bkt", "--management", "--cluster", "c"}, "name two series"},
		{[]string{"prune", "--bucket", "bkt", "--keep-last", "1", "--management", "--cluster", "c"}, "name two series"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			env := map[string]string{"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1", "HCPSNAP_BUCKET": "", "KUBECONFIG": "/nonexistent/kubeconfig"}
			for k, v := range env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			err := New(strings.NewReader(""), &out, &errOut).Run(context.Background(), append([]string{"hcpsnap"}, c.args...))
			if code := exitcode.Of(err); code != exitcode.Usage {
				t.Fatalf("exit code %d (%v), want %d", code, err, exitcode.Usage)
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q should be one line containing %q", err, c.want)
			}
			if out.String() != "" {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
}

// A /tmp target with --allow-tmpfs passes validation, with a warning kept
// for the run.
func TestPullNodeAllowTmpfs(t *testing.T) {
	o := &PullNodeOptions{Node: "master-0", TargetDir: "/tmp/etcd", AllowTmpfs: true, Image: testImage, PodDeadline: 3600e9, WaitTimeout: 1, UndoTimeout: 1,
		S3: S3Options{Bucket: "bkt", PartSizeMiB: 5, Concurrency: 1}, Global: &GlobalOptions{Output: OutputText}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(o.tmpfsWarning, "tmpfs") {
		t.Errorf("warning %q, want one about tmpfs", o.tmpfsWarning)
	}
}

// addManagementBackup puts a backup as pull-node leaves it into the fake.
func addManagementBackup(f *pruneFake, ts, node string) {
	folder := "backups/_management/" + ts + "/"
	f.objects[folder+"snapshot.db"] = []byte("snap")
	f.meta[folder+"snapshot.db"] = map[string]string{"hcpsnap-run": "r" + ts}
	f.objects[folder+"static_kuberesources.tar.gz"] = []byte("tgz")
	t := ts[0:4] + "-" + ts[4:6] + "-" + ts[6:8] + "T" + ts[9:11] + ":" + ts[11:13] + ":" + ts[13:15] + "Z"
	f.objects[folder+"manifest.json"] = []byte(`{"schemaVersion":1,"runID":"r` + ts + `","cluster":"_management","source":"management","node":"` + node +
		`","etcd":{"revision":1234},"snapshot":{"key":"` + folder + `snapshot.db","size":4},"times":{"started":"` + t + `","finished":"2026-03-20T00:00:00Z"}}`)
}

// backups --management lists the management series, newest snapshot
// first; without a series the listing names them "management".
func TestBackupsManagement(t *testing.T) {
	f := newPruneFake()
	addManagementBackup(f, "20260305T020000Z", "master-1")
	addManagementBackup(f, "20260306T020000Z", "master-0")
	for _, c := range []struct {
		management bool
		want       []string
		not        string
	}{
		{management: true, want: []string{"TIME", "NODE", "2026-03-06T02:00:00Z  master-0  1234", "2026-03-05T02:00:00Z  master-1  1234"}, not: "backups/c/"},
		{management: false, want: []string{"CLUSTER", "management", "/c", "none (management)"}},
	} {
		var out bytes.Buffer
		o := &BackupsOptions{Prefix: "backups", Management: c.management, S3: S3Options{Bucket: "bkt"}, Global: &GlobalOptions{Output: OutputText}, Out: &out, store: f}
		if err := o.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		text := out.String()
		for _, w := range c.want {
			if !strings.Contains(text, w) {
				t.Errorf("--management=%v: output lacks %q:\n%s", c.management, w, text)
			}
		}
		if c.not != "" && strings.Contains(text, c.not) {
			t.Errorf("--management lists other series:\n%s", text)
		}
		if c.management && strings.Index(text, "20260306T020000Z") > strings.Index(text, "20260305T020000Z") {
			t.Errorf("not newest first:\n%s", text)
		}
	}
}

// schedule pull-node: each bad flag is one line and exit 2, nothing printed.
func TestSchedulePullNodeBadInput(t *testing.T) {
	ok := []string{"schedule", "pull-node", "--node", "master-0", "--schedule", "30 * * * *", "--job-namespace", "hcpsnap",
		"--image", testImage, "--s3-credentials-secret", "s3", "--bucket", "bkt"}
	with := func(extra ...string) []string { return argsWith(ok, extra...) }
	without := func(flag string) []string { return argsWithout(ok, flag) }
	for _, c := range []struct {
		args []string
		want string
	}{
		{without("--node"), "--node is required"},
		{without("--job-namespace"), "--job-namespace is required"},
		{without("--schedule"), "--schedule is required"},
		{without("--image"), "--image is required"},
		{without("--s3-credentials-secret"), "no S3 credentials"},
		{without("--bucket"), "--bucket is required"},
		{with("--node", "Master_0"), "not a valid node name"},
		{with("--schedule", "CRON_TZ=UTC 0 2 * * *"), "time zone"},
		{with("--schedule", "every day"), "not a valid cron schedule"},
		{with("--time-zone", "Mars/Olympus"), "--time-zone"},
		{with("--image", "registry.example/hcpsnap:latest"), "--image"},
		{with("--target-dir", "/etc"), "--target-dir"},
		{with("--pod-deadline", "1s"), "--pod-deadline"},
		{with("--pod-namespace", "other"), "pod-namespace"},
		{with("--s3-ca-bundle", "/ca.pem"), "s3-ca-bundle"},
		{with("--name", "Bad_Name"), "--name"},
		{with("--apply", "--delete"), "different actions"},
		{with("--dry-run", "maybe"), "not a mode"},
	} {
		t.Run(strings.Join(c.args[2:], " "), func(t *testing.T) {
			t.Setenv("HCPSNAP_BUCKET", "")
			t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
			checkUsageError(t, c.args, c.want)
		})
	}
}

// The rendered job runs pull-node with --node and --image first, then the
// flags set here, and never the excluded ones.
func TestSchedulePullNodeRender(t *testing.T) {
	t.Setenv("HCPSNAP_BUCKET", "")
	var out, errOut bytes.Buffer
	err := New(strings.NewReader(""), &out, &errOut).Run(context.Background(), []string{"hcpsnap", "schedule", "pull-node",
		"--node", "master-0", "--schedule", "30 * * * *", "--job-namespace", "hcpsnap", "--image", testImage,
		"--s3-credentials-secret", "s3", "--bucket", "bkt", "--target-dir", "/var/etcd-snapshots", "--s3-ca-configmap", "ca"})
	if err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	y := out.String()
	for _, want := range []string{"- pull-node\n            - --node=master-0\n            - --image=" + testImage + "\n            - --target-dir=/var/etcd-snapshots\n            - --bucket=bkt\n            - --s3-ca-bundle=/etc/hcpsnap/s3-ca/ca.crt",
		"name: hcpsnap-pull-node:hcpsnap:hcpsnap-pull-node-master-0:nodes", "resourceNames:\n  - hostmount-anyuid", "kind: ClusterRoleBinding", "hcpsnap.io/target: pull-node master-0"} {
		if !strings.Contains(y, want) {
			t.Errorf("render lacks %q:\n%s", want, y)
		}
	}
	if strings.Contains(y, "--pod-namespace") {
		t.Errorf("render passes --pod-namespace:\n%s", y)
	}
}
