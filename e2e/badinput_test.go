//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

// snapshotAll is what a refused command must leave as it was: the
// HostedCluster's spec and annotations, the Deployments' generations and
// replicas, and every object key in the bucket.
func (e *testEnv) snapshotAll(t *testing.T) string {
	t.Helper()
	hc, err := e.hyper.GetHostedCluster(context.Background(), e.namespace, e.cluster)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(hc.Spec)
	ann, _ := json.Marshal(hc.Annotations)
	st := e.state(t)
	reps, _ := json.Marshal(st.replicas)
	gens, _ := json.Marshal(e.deploymentVersions(t))
	return strings.Join([]string{string(spec), string(ann), string(reps), string(gens), strings.Join(e.listObjects(t, ""), ",")}, "\n")
}

func TestBadInput(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// A backup to restore from, and damaged copies of it.
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--online", "--prefix", "badinput")
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	manifestURL := lastSummary(t, res.stdout).Manifest
	m := env.readManifest(t, manifestURL)
	client := env.s3Client(env.vars["AWS_SECRET_ACCESS_KEY"])
	snapshot := env.get(t, "s3://"+env.bucket+"/"+m.Snapshot.Key)
	damaged := func(name string, mutate func(mm *jsonManifest), data []byte, meta map[string]string) string {
		prefix := "damaged/" + name + "/"
		mm := jsonManifest{}
		raw, _ := json.Marshal(m)
		_ = json.Unmarshal(raw, &mm)
		mm["snapshot"].(map[string]any)["key"] = prefix + "snapshot.db"
		if mutate != nil {
			mutate(&mm)
		}
		body, _ := json.Marshal(mm)
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(prefix + "manifest.json"), Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
		if data != nil {
			if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(env.bucket), Key: aws.String(prefix + "snapshot.db"), Body: bytes.NewReader(data), Metadata: meta}); err != nil {
				t.Fatal(err)
			}
		}
		return "s3://" + env.bucket + "/" + prefix + "manifest.json"
	}
	sameMeta := map[string]string{"hcpsnap-run": m.RunID}
	corrupt := append([]byte(nil), snapshot...)
	corrupt[len(corrupt)/2] ^= 0xff
	missingSnap := damaged("missing", nil, nil, nil)
	truncated := damaged("truncated", nil, snapshot[:len(snapshot)/2], sameMeta)
	corrupted := damaged("corrupt", nil, corrupt, sameMeta)
	notEtcd := damaged("not-etcd", func(mm *jsonManifest) { (*mm)["snapshot"].(map[string]any)["size"] = 21 }, []byte("this is not a snapshot"), nil)
	noBundle := damaged("no-bundle", func(mm *jsonManifest) {
		(*mm)["keyBundle"].(map[string]any)["key"] = "hcpsnap-keys/nothing/key-bundle.json"
	}, snapshot, sameMeta)

	render, err := os.ReadFile(renderFile)
	if err != nil {
		t.Fatal(err)
	}
	hcStart := strings.Index(string(render), "apiVersion: hypershift.openshift.io/v1beta1\nkind: HostedCluster")
	hcEnd := strings.Index(string(render), "---\napiVersion: hypershift.openshift.io/v1beta1\nkind: NodePool")
	twoClusters := string(render) + "---\n" + strings.ReplaceAll(string(render)[hcStart:hcEnd], "name: restored\n", "name: second\n")
	withURL := strings.Replace(string(render), "    managementType: Managed", "        restoreSnapshotURL: [\"https://example.com/x\"]\n    managementType: Managed", 1)

	// Run files for --resume.
	runFile := func(name string, mutate func(r *checkpoint.Run)) string {
		d := filepath.Join(dir, "state-"+name)
		r := checkpoint.New("backup", checkpoint.Cluster{Namespace: env.namespace, Name: env.cluster}, "elsewhere", []string{"preflight"}, time.Now())
		if mutate != nil {
			mutate(r)
		}
		data, _ := json.Marshal(r)
		if name == "corrupt" {
			data = data[:len(data)/2]
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, env.namespace+"_"+env.cluster+"_20990101T000000Z-00000000.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}

	tlsServer := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsServer.Close()
	unreachable := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))

	type tc struct {
		name     string
		args     []string
		env      []string
		stateDir string
		before   func(t *testing.T)
		after    func(t *testing.T)
		code     exitcode.Code
		want     string
	}
	backup := func(args ...string) []string { return append([]string{"backup"}, args...) }
	restoreFrom := func(from string, args ...string) []string {
		return append([]string{"restore", "--from", from, "-f", renderFile}, args...)
	}
	restoreRender := func(render string) []string { return []string{"restore", "--from", manifestURL, "-f", render} }
	tests := []tc{
		// The cluster and its control plane.
		{name: "unknown cluster", args: backup("--cluster", "nope"), code: exitcode.Precondition, want: "HostedCluster clusters/nope not found"},
		{name: "unknown namespace", args: backup("--namespace", "nope"), code: exitcode.Precondition, want: "not found"},
		{name: "invalid cluster name", args: backup("--cluster", "Not_Valid"), code: exitcode.Usage, want: `--cluster "Not_Valid"`},
		{name: "invalid namespace name", args: backup("--namespace", "a.b/c"), code: exitcode.Usage, want: "--namespace"},
		{name: "missing etcd pod", args: backup("--member", "etcd-7"), code: exitcode.Precondition, want: "--member"},
		{name: "missing container", args: backup("--container", "nope"), code: exitcode.Precondition, want: "--container"},
		{name: "missing etcdctl", args: backup("--etcdctl", "/usr/bin/no-etcdctl"), code: exitcode.Precondition, want: "--etcdctl"},
		{name: "missing TLS files", args: backup("--etcd-cert", "/etc/etcd/tls/client/nope.crt"), code: exitcode.Precondition, want: "--etcd-cert"},
		{name: "no space for the snapshot", args: backup("--snapshot-dir", "/proc"), code: exitcode.Precondition, want: "free"},
		{name: "invalid existing pausedUntil", args: backup(), code: exitcode.Precondition, want: "spec.pausedUntil",
			// The CRD only checks the shape; this date does not exist.
			before: func(t *testing.T) { bad := "2026-13-45T99:99:99Z"; setPausedUntil(t, env, &bad) },
			after:  func(t *testing.T) { setPausedUntil(t, env, nil) }},
		{name: "missing API Deployment", args: backup("--deployments", "kube-apiserver,no-such-apiserver"), code: exitcode.Precondition, want: "--deployments"},
		{name: "replicas already 0", args: backup(), code: exitcode.Precondition, want: "already has 0 replicas",
			before: func(t *testing.T) { pauseFor(t, env, 10*time.Minute); env.scale(t, "openshift-oauth-apiserver", 0) },
			after: func(t *testing.T) {
				env.scale(t, "openshift-oauth-apiserver", 3)
				env.waitReady(t, "openshift-oauth-apiserver", 3)
			}},
		// The bucket and the credentials.
		{name: "missing bucket flag", args: backup(), env: []string{"HCPSNAP_BUCKET="}, code: exitcode.Usage, want: "--bucket is required"},
		{name: "bucket does not exist", args: backup("--bucket", "no-such-bucket"), code: exitcode.Precondition, want: "does not exist"},
		{name: "wrong secret key", args: backup(), env: []string{"AWS_SECRET_ACCESS_KEY=wrong-secret-key-0000"}, code: exitcode.Precondition, want: "bad credentials"},
		{name: "unknown access key", args: backup(), env: []string{"AWS_ACCESS_KEY_ID=AKIANOSUCHKEY"}, code: exitcode.Precondition, want: "bad credentials"},
		{name: "expired or invalid session token", args: backup(), env: []string{"AWS_SESSION_TOKEN=expired-token"}, code: exitcode.Precondition, want: "credentials"},
		{name: "no credentials", args: backup(), env: []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_EC2_METADATA_DISABLED=true"}, code: exitcode.Precondition, want: "credentials"},
		{name: "wrong region", args: backup(), env: []string{"AWS_REGION=eu-west-3"}, code: exitcode.Precondition, want: "region"},
		{name: "unreachable endpoint", args: backup(), env: []string{"AWS_ENDPOINT_URL_S3=" + unreachable}, code: exitcode.Precondition, want: "refused the connection"},
		{name: "TLS-invalid endpoint", args: backup(), env: []string{"AWS_ENDPOINT_URL_S3=" + tlsServer.URL}, code: exitcode.Precondition, want: "--s3-ca-bundle"},
		// Flags.
		{name: "dry run and resume", args: backup("--dry-run", "--resume"), code: exitcode.Usage, want: "cannot be combined"},
		{name: "key file and SSE", args: backup("--key-out", filepath.Join(dir, "k.json"), "--sse", "AES256"), code: exitcode.Usage, want: "contradict"},
		{name: "unknown step", args: backup("--skip-steps", "snapshot"), code: exitcode.Usage, want: "unknown step"},
		{name: "URL lifetime too long", args: restoreFrom(manifestURL, "--url-expires", "200h"), code: exitcode.Usage, want: "--url-expires"},
		// Run files.
		{name: "corrupt run file", args: backup("--resume"), stateDir: runFile("corrupt", nil), code: exitcode.Usage, want: "run file"},
		{name: "run file of another cluster", args: backup("--resume"), stateDir: runFile("other", func(r *checkpoint.Run) { r.Cluster.Name = "other" }), code: exitcode.Usage, want: "belongs to cluster"},
		{name: "run file of a newer schema", args: backup("--resume"), stateDir: runFile("newer", func(r *checkpoint.Run) { r.SchemaVersion = 99 }), code: exitcode.Usage, want: "newer"},
		{name: "nothing to resume", args: backup("--resume"), code: exitcode.Precondition, want: "no unfinished backup run"},
		// Renders.
		{name: "render is not YAML", args: restoreRender(write("bad.yaml", "a: [\n")), code: exitcode.Usage, want: "not YAML"},
		{name: "render without HostedCluster", args: restoreRender(write("none.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n")), code: exitcode.Usage, want: "no HostedCluster"},
		{name: "render with several HostedClusters", args: restoreRender(write("two.yaml", twoClusters)), code: exitcode.Usage, want: "--hosted-cluster"},
		{name: "render with unmanaged etcd", args: restoreRender(write("unmanaged.yaml", strings.Replace(string(render), "managementType: Managed", "managementType: Unmanaged", 1))), code: exitcode.Usage, want: "Unmanaged"},
		{name: "render with a restoreSnapshotURL", args: restoreRender(write("url.yaml", withURL)), code: exitcode.Usage, want: "--force"},
		{name: "empty render", args: restoreRender(write("empty.yaml", "")), code: exitcode.Usage, want: "is empty"},
		// Snapshot objects.
		{name: "backup without manifest", args: restoreFrom("s3://" + env.bucket + "/nothing/example/x/manifest.json"), code: exitcode.Precondition, want: "manifest"},
		{name: "missing snapshot object", args: restoreFrom(missingSnap), code: exitcode.Precondition, want: "missing"},
		{name: "truncated snapshot object", args: restoreFrom(truncated), code: exitcode.Precondition, want: "does not match its manifest"},
		{name: "corrupt snapshot object", args: restoreFrom(corrupted, "--verify"), code: exitcode.Precondition, want: "corrupt"},
		{name: "non-etcd snapshot object", args: restoreFrom(notEtcd), code: exitcode.Precondition, want: "does not match its manifest"},
		{name: "backup without key bundle", args: restoreFrom(noBundle), code: exitcode.Precondition, want: "key bundle"},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d bad-input cases", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before(t)
			}
			if tt.after != nil {
				defer tt.after(t)
			}
			before := env.snapshotAll(t)
			stateDir := tt.stateDir
			if stateDir == "" {
				stateDir = t.TempDir()
			}
			args := tt.args
			r := env.startHcpsnap(t, stateDir, tt.env, args...)
			code := r.wait(t)
			if exitcode.Code(code) != tt.code {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", code, tt.code, r.stderr.String())
			}
			last := lastLine(r.stderr.String())
			if !strings.HasPrefix(last, "hcpsnap: ") || !strings.Contains(last, tt.want) {
				t.Fatalf("last line %q: want one 'hcpsnap: ' line containing %q", last, tt.want)
			}
			if r.stdout.Len() != 0 {
				t.Fatalf("stdout not empty: %q", r.stdout.String())
			}
			if after := env.snapshotAll(t); after != before {
				t.Fatalf("the cluster or the bucket changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

type jsonManifest map[string]any
