//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/hcpsnap/hcpsnap/e2e/fixture"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
)

// drillLine is the part of `verify --drill -o json` the tests read.
type drillLine struct {
	MessageType string       `json:"message_type"`
	OK          bool         `json:"ok"`
	ExitCode    int          `json:"exitCode"`
	Error       string       `json:"error"`
	Result      *drillResult `json:"result"`
	Shards      []struct {
		Shard  string       `json:"shard"`
		OK     bool         `json:"ok"`
		Result *drillResult `json:"result"`
	} `json:"shards"`
}

// drillResult is the part of drill.Result the tests read.
type drillResult struct {
	Revision         int64  `json:"revision"`
	ExpectedRevision int64  `json:"expectedRevision"`
	ClientURL        string `json:"clientURL"`
	PeerURL          string `json:"peerURL"`
	Contents         struct {
		Keys       int64            `json:"keys"`
		Resources  map[string]int64 `json:"resources"`
		Namespaces []string         `json:"namespaces"`
		Secrets    struct {
			Total, AESCBC, Decrypted, Plain int
			FirstFailure                    string `json:"firstFailure"`
			Unchecked                       string `json:"unchecked"`
		} `json:"secrets"`
	} `json:"contents"`
}

// TestDrill takes a backup of the hosted cluster, whose etcd holds Secrets
// encrypted with the HostedCluster's AES key (fixture.WriteStored), and
// drills it and damaged copies of it with the built binary.
func TestDrill(t *testing.T) {
	env := loadEnv(t)
	var m *manifest.Manifest
	for _, via := range []string{"stream", "exec"} {
		t.Run("good backup via "+via, func(t *testing.T) {
			prefix := "drill-" + via
			res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--via", via, "--prefix", prefix, "--key-prefix", "e2e-drill-keys")
			if res.code != 0 {
				t.Fatalf("backup exit %d\nstderr:\n%s", res.code, res.stderr)
			}
			manifestURL := lastSummary(t, res.stdout).Manifest
			m = env.readManifest(t, manifestURL)
			env.checkGoodDrill(t, m, manifestURL)

			// The text report of the cluster's newest backup under the prefix.
			r := env.hcpsnap(t, t.TempDir(), "verify", "--drill", "--cluster", env.cluster, "--prefix", prefix)
			want := fmt.Sprintf("decrypts %[1]d of %[1]d aescbc Secrets", len(fixture.StoredKeys()["secrets"]))
			if r.code != 0 || !strings.Contains(r.stdout, "drill "+env.namespace+"/"+env.cluster+": OK") || !strings.Contains(r.stdout, want) {
				t.Errorf("verify --drill --cluster: exit %d, want 0 and %q\nstdout:\n%s\nstderr:\n%s", r.code, want, r.stdout, r.stderr)
			}
			t.Logf("verify --drill report:\n%s", r.stdout)
			// Without --drill: the cheap check.
			if r := env.hcpsnap(t, t.TempDir(), "verify", "--cluster", env.cluster, "--prefix", prefix); r.code != 0 || !strings.Contains(r.stdout, ": OK") {
				t.Errorf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
		})
	}
	if m == nil {
		t.Fatal("no backup to damage")
	}

	t.Run("another AES key in the key bundle", func(t *testing.T) {
		other := env.copyBackup(t, m, "other-key", func(snap, bundle []byte, mm *manifest.Manifest) ([]byte, []byte) {
			return snap, replaceActiveKey(t, bundle)
		})
		line, _ := env.drill(t, int(exitcode.KeyMismatch), "--from", other)
		if !strings.Contains(line.Error, "key does not match") || !strings.Contains(line.Error, "0 of") {
			t.Errorf("error %q, want key does not match, 0 of N", line.Error)
		}
	})

	t.Run("truncated snapshot", func(t *testing.T) {
		trunc := env.copyBackup(t, m, "truncated", func(snap, bundle []byte, mm *manifest.Manifest) ([]byte, []byte) {
			return snap[:len(snap)/2], bundle
		})
		line, _ := env.drill(t, int(exitcode.Unusable), "--from", trunc)
		if !strings.Contains(line.Error, "backup unusable") {
			t.Errorf("error %q, want backup unusable", line.Error)
		}
		// The same with a manifest that agrees on the size: the stream's
		// own checks find it.
		trunc2 := env.copyBackup(t, m, "truncated-size", func(snap, bundle []byte, mm *manifest.Manifest) ([]byte, []byte) {
			mm.Snapshot.Size = int64(len(snap) / 2)
			return snap[:len(snap)/2], bundle
		})
		line, _ = env.drill(t, int(exitcode.Unusable), "--from", trunc2)
		if !strings.Contains(line.Error, "SHA-256") {
			t.Errorf("error %q, want a hash failure", line.Error)
		}
	})

	t.Run("no key bundle", func(t *testing.T) {
		none := env.copyBackup(t, m, "no-bundle", func(snap, bundle []byte, mm *manifest.Manifest) ([]byte, []byte) {
			mm.KeyBundle = manifest.KeyBundle{}
			return snap, nil
		})
		line, _ := env.drill(t, int(exitcode.KeyMismatch), "--from", none)
		if !strings.Contains(line.Result.Contents.Secrets.Unchecked, "no key bundle") {
			t.Errorf("secrets %+v, want unchecked: no key bundle", line.Result.Contents.Secrets)
		}
	})
}

// checkGoodDrill drills the backup and compares what it reports with the
// source etcd at the manifest's revision, read by etcdctl.
func (env *testEnv) checkGoodDrill(t *testing.T, m *manifest.Manifest, manifestURL string) {
	t.Helper()
	line, stderr := env.drill(t, 0, "--from", manifestURL)
	r := line.Result
	if r == nil {
		t.Fatalf("no result:\n%s", stderr)
	}
	if r.Revision != m.Etcd.Revision+1_000_000_000 || r.ExpectedRevision != r.Revision {
		t.Errorf("revision %d, want the manifest's %d + 1e9", r.Revision, m.Etcd.Revision)
	}
	keys := env.keysAt(t, m.Etcd.Revision)
	if r.Contents.Keys != int64(len(keys)) {
		t.Errorf("drill counted %d keys, etcdctl --rev %d lists %d", r.Contents.Keys, m.Etcd.Revision, len(keys))
	}
	for _, res := range []string{"secrets", "namespaces", "configmaps", "hcpsnap-fill"} {
		n := 0
		for _, k := range keys {
			if strings.HasPrefix(k, "/kubernetes.io/"+res+"/") {
				n++
			}
		}
		if n == 0 || r.Contents.Resources[res] != int64(n) {
			t.Errorf("resource %s: drill %d, etcdctl %d (want > 0)", res, r.Contents.Resources[res], n)
		}
	}
	if got, want := strings.Join(r.Contents.Namespaces, ","), strings.Join(sortedCopy(fixture.StoredNamespaces), ","); got != want {
		t.Errorf("namespaces %s, want %s", got, want)
	}
	want := len(fixture.StoredKeys()["secrets"])
	s := r.Contents.Secrets
	if s.AESCBC != want || s.Decrypted != want || s.Plain != 0 {
		t.Errorf("secrets %+v, want %d of %d decrypted", s, want, want)
	}
	for _, u := range []string{r.ClientURL, r.PeerURL} {
		if !strings.HasPrefix(u, "http://127.0.0.1:") {
			t.Errorf("embedded etcd URL %s is not on loopback", u)
		}
	}
}

// drill runs `verify --drill -o json` with a private scratch folder while
// watching the process's listening sockets; it checks the exit code, that
// the scratch folder is empty afterwards and that every listener was on
// 127.0.0.1.
func (e *testEnv) drill(t *testing.T, wantCode int, args ...string) (drillLine, string) {
	t.Helper()
	scratch := t.TempDir()
	r := e.startHcpsnap(t, t.TempDir(), nil, append([]string{"-o", "json", "verify", "--drill", "--scratch-dir", scratch}, args...)...)
	listeners := map[string]bool{}
	for done := false; !done; {
		select {
		case <-r.done:
			done = true
		case <-time.After(20 * time.Millisecond):
		}
		for _, l := range listening(r.cmd.Process.Pid) {
			listeners[l] = true
		}
	}
	stdout, stderr := r.stdout.String(), r.stderr.String()
	if r.code != wantCode {
		t.Fatalf("verify --drill exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, wantCode, stdout, stderr)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("scratch folder holds %d entries after the drill", len(left))
	}
	if wantCode == 0 && len(listeners) == 0 {
		t.Error("saw no listening socket of the embedded etcd: the loopback check proves nothing")
	}
	for l := range listeners {
		if !strings.HasPrefix(l, "0100007F:") {
			t.Errorf("the drill listened on %s (hex /proc/net/tcp address), not 127.0.0.1", l)
		}
	}
	var line drillLine
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if json.Unmarshal([]byte(l), &line) == nil && line.MessageType == "verify" {
			break
		}
	}
	if line.MessageType != "verify" {
		t.Fatalf("no verify line in\n%s", stdout)
	}
	if strings.Contains(stdout+stderr, base64.StdEncoding.EncodeToString(fixture.EncryptionKey(e.FixtureConfig()))) {
		t.Error("the output holds the AES key")
	}
	return line, stderr
}

// listening returns the local addresses (hex, as /proc/net/tcp{,6} shows
// them) of the listening TCP sockets that process pid holds.
func listening(pid int) []string {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, f := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			if inodes[fields[9]] {
				out = append(out, fields[1])
			}
		}
	}
	return out
}

// keysAt lists every key of the hosted etcd at rev with etcdctl in etcd-0.
func (e *testEnv) keysAt(t *testing.T, rev int64) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := append(slices.Clone(runbookEtcdctl), "get", "", "--prefix", "--keys-only", "--rev", strconv.FormatInt(rev, 10), "-w", "json")
	out, errOut, err := e.exec(ctx, "etcd-0", get...)
	if err != nil {
		t.Fatalf("etcdctl get: %v: %s", err, errOut)
	}
	var resp struct {
		Kvs []struct {
			Key []byte `json:"key"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("etcdctl get output: %v", err)
	}
	keys := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		keys[i] = string(kv.Key)
	}
	return keys
}

// copyBackup writes a copy of backup m under e2e-drill/<name>/, with its
// snapshot, key bundle and manifest passed through damage, and returns the
// copy's manifest URL. The original stays whole for the other tests.
func (e *testEnv) copyBackup(t *testing.T, m *manifest.Manifest, name string, damage func(snap, bundle []byte, mm *manifest.Manifest) ([]byte, []byte)) string {
	t.Helper()
	snap := e.get(t, "s3://"+e.bucket+"/"+m.Snapshot.Key)
	bundle := e.get(t, "s3://"+e.bucket+"/"+m.KeyBundle.Key)
	cp := *m
	dir := path.Join("e2e-drill", fmt.Sprintf("%s-%d", name, time.Now().UnixNano()))
	cp.Snapshot.Key = dir + "/snapshot.db"
	cp.KeyBundle.Key = dir + "/keys.json"
	snap, bundle = damage(snap, bundle, &cp)
	client := e.s3Client(e.vars["AWS_SECRET_ACCESS_KEY"])
	put := func(key string, body []byte, meta map[string]string) {
		t.Helper()
		if _, err := client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key),
			Body: bytes.NewReader(body), Metadata: meta}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put(cp.Snapshot.Key, snap, map[string]string{manifest.MetaRunID: m.RunID})
	if bundle != nil {
		put(cp.KeyBundle.Key, bundle, nil)
	}
	mb, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	put(dir+"/manifest.json", mb, nil)
	return "s3://" + e.bucket + "/" + dir + "/manifest.json"
}

// replaceActiveKey puts another 32-byte AES key in the bundle's active key
// Secret.
func replaceActiveKey(t *testing.T, bundle []byte) []byte {
	t.Helper()
	var list map[string]any
	if err := json.Unmarshal(bundle, &list); err != nil {
		t.Fatal(err)
	}
	replaced := false
	for _, it := range list["items"].([]any) {
		s := it.(map[string]any)
		meta, _ := s["metadata"].(map[string]any)
		ann, _ := meta["annotations"].(map[string]any)
		if ann[manifest.RoleAnnotation] == manifest.RoleActiveKey {
			s["data"] = map[string]any{"key": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))}
			replaced = true
		}
	}
	if !replaced {
		t.Fatal("the key bundle has no active key Secret")
	}
	out, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// TestDrillInterrupted sends SIGINT while the drill restores or serves the
// snapshot: hcpsnap ends with 130 and leaves nothing in the scratch folder.
func TestDrillInterrupted(t *testing.T) {
	env := loadEnv(t)
	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--prefix", "drill-sigint", "--key-prefix", "e2e-drill-keys")
	if res.code != 0 {
		t.Fatalf("backup exit %d\nstderr:\n%s", res.code, res.stderr)
	}
	manifestURL := lastSummary(t, res.stdout).Manifest
	for _, stage := range []string{"snapshot.db", "data"} {
		t.Run("in "+stage, func(t *testing.T) {
			scratch := t.TempDir()
			r := env.startHcpsnap(t, t.TempDir(), nil, "verify", "--drill", "--scratch-dir", scratch, "--from", manifestURL)
			signalled := false
			for deadline := time.Now().Add(time.Minute); !signalled && time.Now().Before(deadline); {
				select {
				case <-r.done:
					t.Fatalf("the drill ended (exit %d) before it wrote %s\nstderr:\n%s", r.code, stage, r.stderr.String())
				case <-time.After(2 * time.Millisecond):
				}
				if m, _ := filepath.Glob(filepath.Join(scratch, "hcpsnap-drill-*", stage)); len(m) > 0 {
					if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
						t.Fatal(err)
					}
					signalled = true
				}
			}
			if !signalled {
				t.Fatalf("the drill never wrote %s", stage)
			}
			<-r.done
			if r.code != int(exitcode.Interrupted) {
				t.Errorf("exit %d after SIGINT, want %d\nstdout:\n%s\nstderr:\n%s", r.code, exitcode.Interrupted, r.stdout.String(), r.stderr.String())
			}
			if left, _ := os.ReadDir(scratch); len(left) != 0 {
				t.Errorf("the scratch folder holds %d entries after SIGINT", len(left))
			}
			t.Logf("stderr:\n%s", r.stderr.String())
		})
	}
}

// TestDrillKMS drills a backup of the KMS variant, whose Secrets are KMS v2
// envelopes of the active key: the drill reports the provider, matches it
// with the manifest's recorded keys, and cannot decrypt it offline; a copy
// whose manifest no longer records that key fails with exit 8.
func TestDrillKMS(t *testing.T) {
	env := loadEnv(t)
	ctx := context.Background()
	env.useKMSVariant(t)
	// The KMS variant holds no aescbc data: set the fixture's aescbc
	// Secrets aside, and write them back afterwards.
	cli, err := fixture.EtcdClient(env.FixtureConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range fixture.StoredKeys()["secrets"] {
		if _, err := cli.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		defer cli.Close()
		if err := fixture.WriteStored(context.Background(), cli, fixture.EncryptionKey(env.FixtureConfig())); err != nil {
			t.Errorf("write the fixture's Secrets back: %v", err)
		}
	})
	envelopes := env.writeKMSEnvelopes(t, 3)

	res := env.hcpsnap(t, t.TempDir(), "-o", "json", "backup", "--prefix", "drill-kms")
	if res.code != 0 {
		t.Fatalf("backup exit %d: %s", res.code, res.stderr)
	}
	manifestURL := lastSummary(t, res.stdout).Manifest
	m := env.readManifest(t, manifestURL)

	line, _ := env.drill(t, 0, "--from", manifestURL)
	out := env.hcpsnap(t, t.TempDir(), "verify", "--drill", "--from", manifestURL)
	t.Logf("verify --drill report:\n%s", out.stdout)
	for _, w := range []string{"ok   kms", kmsActiveProviderName + " (active key " + fixture.KMSActiveKeyARN, "cannot be checked offline"} {
		if !strings.Contains(out.stdout, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	if s := line.Result.Contents.Secrets; s.AESCBC != 0 || s.Total != len(envelopes) {
		t.Errorf("secrets %+v, want %d KMS envelopes and no aescbc", s, len(envelopes))
	}

	// A manifest that records another active key: the data names a key the
	// restored cluster would not have.
	otherARN := "arn:aws:kms:us-east-1:123456789012:key/99999999-9999-9999-9999-999999999999"
	other := env.copyBackup(t, m, "kms-other-key", func(snap, bundle []byte, mm *manifest.Manifest) ([]byte, []byte) {
		kms := *mm.Encryption.KMS
		kms.Keys = slices.Clone(kms.Keys)
		kms.Keys[0] = manifest.KMSKey{Role: manifest.KMSKeyActive, ID: otherARN, ProviderName: manifest.AWSKMSProviderName(otherARN)}
		mm.Encryption = &manifest.Encryption{Type: mm.Encryption.Type, KMS: &kms}
		return snap, bundle
	})
	line, _ = env.drill(t, int(exitcode.KeyMismatch), "--from", other)
	if !strings.Contains(line.Error, kmsActiveProviderName) || !strings.Contains(line.Error, "does not record") {
		t.Errorf("error %q, want the unrecorded provider %s", line.Error, kmsActiveProviderName)
	}
}
