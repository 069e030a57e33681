//go:build e2e

package etcdclient

// These tests run real etcd servers of both pinned lines (built by
// `make deps` into .cache/bin/etcd-<version>/) on loopback, with TLS as
// HyperShift sets it up: a serving certificate for DNS name localhost only and
// client certificate authentication. Members.Dial is a plain TCP dial: the
// port-forward itself is covered by internal/kube's e2e test.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hcpsnap/hcpsnap/internal/kube/kubetest"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// etcdVersions reads the pinned etcd versions from deps/versions.mk, so the
// test follows what `make deps` builds.
func etcdVersions(t *testing.T) []string {
	t.Helper()
	mk, err := os.ReadFile("../../deps/versions.mk")
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, name := range []string{"ETCD_36_VERSION", "ETCD_35_VERSION"} {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(\S+)`).FindSubmatch(mk)
		if m == nil {
			t.Fatalf("deps/versions.mk sets no %s", name)
		}
		versions = append(versions, string(m[1]))
	}
	return versions
}

// binDir is LOCALENV_BIN_DIR (or the repository's .cache/bin)/etcd-<version>;
// a missing binary fails the test: the e2e suite runs after `make deps`.
func binDir(t *testing.T, version string) string {
	t.Helper()
	dir := os.Getenv("LOCALENV_BIN_DIR")
	if dir == "" {
		dir = "../../.cache/bin"
	}
	dir, err := filepath.Abs(filepath.Join(dir, "etcd-"+version))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"etcd", "etcdutl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("no %s in %s: run `make deps`", b, dir)
		}
	}
	return dir
}

// member is one running etcd server.
type member struct {
	cmd  *exec.Cmd
	addr string // host:port of the client URL
	done chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a single-member etcd of dir with p's certificates and waits
// until it answers.
func startEtcd(t *testing.T, dir string, p pki) *member {
	t.Helper()
	tmp := t.TempDir()
	files := map[string][]byte{"ca.crt": p.caPEM, "server.crt": p.serverCrt, "server.key": p.serverKey}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(filepath.Join(dir, "etcd"),
		"--name", "m0", "--data-dir", filepath.Join(tmp, "data"),
		"--listen-client-urls", "https://"+addr, "--advertise-client-urls", "https://"+addr,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "m0="+peer,
		"--cert-file", filepath.Join(tmp, "server.crt"), "--key-file", filepath.Join(tmp, "server.key"),
		"--trusted-ca-file", filepath.Join(tmp, "ca.crt"), "--client-cert-auth",
		"--log-level", "error")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &member{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-m.done
		if t.Failed() {
			t.Logf("etcd output:\n%s", logs.String())
		}
	})
	cli := directClient(t, m, p)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Status(ctx, cli.Endpoints()[0])
		cancel()
		if err == nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// directClient is a plain clientv3 client of the member, to write data.
func directClient(t *testing.T, m *member, p pki) *clientv3.Client {
	t.Helper()
	cert, err := tls.X509KeyPair(p.clientCrt, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"https://" + m.addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// tcpDial reaches the member directly, in place of the port-forward.
func tcpDial(m *member) func(context.Context, string, string, int) (net.Conn, error) {
	return func(ctx context.Context, namespace, pod string, port int) (net.Conn, error) {
		if namespace != testNS || pod != "etcd-0" || port != DefaultPort {
			return nil, fmt.Errorf("dial of %s/%s:%d, want %s/etcd-0:%d", namespace, pod, port, testNS, DefaultPort)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", m.addr)
	}
}

// fill writes n values of size bytes and returns the revision after them.
func fill(t *testing.T, cli *clientv3.Client, n, size int) int64 {
	t.Helper()
	val := strings.Repeat("v", size)
	var rev int64
	for i := range n {
		resp, err := cli.Put(context.Background(), fmt.Sprintf("/registry/k%04d", i), val)
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	return rev
}

func TestMembers(t *testing.T) {
	p := newPKI(t)
	for _, version := range etcdVersions(t) {
		t.Run(version, func(t *testing.T) {
			dir := binDir(t, version)
			m := startEtcd(t, dir, p)
			direct := directClient(t, m, p)
			rev := fill(t, direct, 100, 1024)
			// Past the backend's commit interval, so the size holds still.
			time.Sleep(500 * time.Millisecond)

			for _, keys := range [][2]string{{"etcd-client.crt", "etcd-client.key"}, {"tls.crt", "tls.key"}} {
				secret, cm := objects(p, keys[0], keys[1])
				members := &Members{Kube: fake.NewClientset(secret, cm), Dial: tcpDial(m)}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()

				t.Run("status with "+keys[0], func(t *testing.T) {
					dials := 0
					counted := *members
					counted.Dial = func(ctx context.Context, ns, pod string, port int) (net.Conn, error) {
						dials++
						return members.Dial(ctx, ns, pod, port)
					}
					size, got, err := counted.Status(ctx, testNS, "etcd-0")
					if err != nil {
						t.Fatal(err)
					}
					if dials != 1 {
						t.Errorf("Status opened %d connections, want 1", dials)
					}
					if want := strings.TrimPrefix(version, "v"); got != want {
						t.Errorf("version %q, want %q", got, want)
					}
					st, err := direct.Status(ctx, direct.Endpoints()[0])
					if err != nil {
						t.Fatal(err)
					}
					if size <= 0 || size != st.DbSize {
						t.Errorf("db size %d, want %d as the member reports it", size, st.DbSize)
					}
				})

				t.Run("snapshot with "+keys[0], func(t *testing.T) {
					rc, err := members.Snapshot(ctx, testNS, "etcd-0")
					if err != nil {
						t.Fatal(err)
					}
					data, err := io.ReadAll(rc)
					if err != nil {
						t.Fatal(err)
					}
					if err := rc.Close(); err != nil {
						t.Errorf("close: %v", err)
					}
					if len(data) <= sha256.Size {
						t.Fatalf("snapshot of %d bytes", len(data))
					}
					body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
					if h := sha256.Sum256(body); !bytes.Equal(h[:], sum) {
						t.Fatalf("the last 32 bytes are not the SHA-256 of the rest")
					}
					if got := snapshotRevision(t, dir, data); got != rev {
						t.Errorf("etcdutl snapshot status: revision %d, want %d", got, rev)
					}
				})
			}
		})
	}
}

// snapshotRevision saves data and returns the revision etcdutl reports.
func snapshotRevision(t *testing.T, dir string, data []byte) int64 {
	t.Helper()
	file := filepath.Join(t.TempDir(), "snapshot.db")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(dir, "etcdutl"), "snapshot", "status", "-w", "json", file).Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status: %v", err)
	}
	var st struct {
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("etcdutl snapshot status output %q: %v", out, err)
	}
	return st.Revision
}

// TestSnapshotMemberKilledMidStream kills etcd after the first bytes: Read
// must fail, never end with a clean EOF.
func TestSnapshotMemberKilledMidStream(t *testing.T) {
	p := newPKI(t)
	dir := binDir(t, etcdVersions(t)[0])
	m := startEtcd(t, dir, p)
	// 16 MiB: more than gRPC's window and the socket buffers hold.
	fill(t, directClient(t, m, p), 64, 256*1024)
	secret, cm := objects(p, "etcd-client.crt", "etcd-client.key")
	members := &Members{Kube: fake.NewClientset(secret, cm), Dial: tcpDial(m)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := members.Snapshot(ctx, testNS, "etcd-0")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	first := make([]byte, 4096)
	if _, err := io.ReadFull(rc, first); err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-m.done
	n, err := io.Copy(io.Discard, rc)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read %d more bytes after the member was killed, then err=%v; want a stream error", n, err)
	}
	t.Log(err)
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), testNS+"/etcd-0") {
		t.Errorf("error %q: want one line naming the member", err)
	}
}

// TestSnapshotSlowReader holds the reader still while etcd could send a
// 64 MiB database: the heap must not take the database in (gRPC's windows
// are fixed), and the stream must then go on to a whole snapshot.
func TestSnapshotSlowReader(t *testing.T) {
	p := newPKI(t)
	dir := binDir(t, etcdVersions(t)[0])
	m := startEtcd(t, dir, p)
	rev := fill(t, directClient(t, m, p), 256, 256*1024)
	secret, cm := objects(p, "etcd-client.crt", "etcd-client.key")
	members := &Members{Kube: fake.NewClientset(secret, cm), Dial: tcpDial(m)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rc, err := members.Snapshot(ctx, testNS, "etcd-0")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Read fast first: gRPC's bandwidth-delay estimate, when on, grows the
	// windows while data flows quickly. The bytes go to a file, off the heap.
	file, err := os.Create(filepath.Join(t.TempDir(), "snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := io.CopyN(file, rc, 8<<20); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d KiB while the reader stood still", grown>>10)
	if grown > connWindow+6<<20 {
		t.Errorf("heap grew by %d MiB while the reader stood still: the stream is not held back", grown>>20)
	}
	if _, err := io.Copy(file, rc); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file.Name())
	if err != nil {
		t.Fatal(err)
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if h := sha256.Sum256(body); !bytes.Equal(h[:], sum) {
		t.Fatalf("the last 32 bytes are not the SHA-256 of the rest")
	}
	if got := snapshotRevision(t, dir, data); got != rev {
		t.Errorf("etcdutl snapshot status: revision %d, want %d", got, rev)
	}
}

// TestMembersErrors checks that each error names what to fix, and comes
// without waiting for the dial timeout.
func TestMembersErrors(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	dir := binDir(t, etcdVersions(t)[0])
	m := startEtcd(t, dir, p)
	secret, cm := objects(p, "etcd-client.crt", "etcd-client.key")
	_, otherCM := objects(other, "etcd-client.crt", "etcd-client.key")
	noKeys := secret.DeepCopy()
	noKeys.Data = map[string][]byte{"ca.crt": p.caPEM}
	noCA := cm.DeepCopy()
	noCA.Data = map[string]string{"service-ca.crt": string(p.caPEM)}
	refused := func(ctx context.Context, _, _ string, _ int) (net.Conn, error) {
		return nil, errors.New("error forwarding port 2379 to pod etcd-0: connection refused")
	}

	cases := []struct {
		name    string
		members *Members
		want    []string
	}{
		{"missing Secret", &Members{Kube: fake.NewClientset(cm), Dial: tcpDial(m)},
			[]string{"Secret " + testNS + "/etcd-client-tls", "not found"}},
		{"Secret without the keys", &Members{Kube: fake.NewClientset(noKeys, cm), Dial: tcpDial(m)},
			[]string{"Secret " + testNS + "/etcd-client-tls", "etcd-client.crt", "etcd-client.key"}},
		{"missing ConfigMap", &Members{Kube: fake.NewClientset(secret), Dial: tcpDial(m)},
			[]string{"ConfigMap " + testNS + "/etcd-ca", "not found"}},
		{"ConfigMap without ca.crt", &Members{Kube: fake.NewClientset(secret, noCA), Dial: tcpDial(m)},
			[]string{"ConfigMap " + testNS + "/etcd-ca", "ca.crt"}},
		{"wrong CA", &Members{Kube: fake.NewClientset(secret, otherCM), Dial: tcpDial(m)},
			[]string{`server name "localhost"`, "ConfigMap " + testNS + "/etcd-ca", "certificate"}},
		{"wrong server name", &Members{Kube: fake.NewClientset(secret, cm), Dial: tcpDial(m), ServerName: "etcd-client"},
			[]string{`server name "etcd-client"`, "certificate"}},
		{"port-forward refused", &Members{Kube: fake.NewClientset(secret, cm), Dial: refused},
			[]string{"etcd member " + testNS + "/etcd-0 port 2379", "connection refused"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := tc.members.Snapshot(ctx, testNS, "etcd-0")
			if err == nil {
				t.Fatal("no error")
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the error took %v: want it at once, not at the dial timeout", took)
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "\n") {
				t.Errorf("error on several lines: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			_, _, err = tc.members.Status(ctx, testNS, "etcd-0")
			if err == nil || err.Error() != msg {
				t.Errorf("Status error %v, want the same as Snapshot's", err)
			}
		})
	}
}

// portForwarder is a kube.PortForwarder of an in-process apiserver stand-in
// that serves pods/portforward of pod etcd-0 (kubetest).
func portForwarder(t *testing.T, protocol string) *kube.PortForwarder {
	t.Helper()
	cfg, _ := kubetest.PortForwardServer(t, testNS, "etcd-0")
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &kube.PortForwarder{Config: cfg, Client: client, Protocol: protocol}
}

// TestMembersThroughPortForward runs the member's status and snapshot over
// kube.PortForwarder on both protocols, then kills the member mid-stream:
// there the kubelet's copy simply ends, and the stream must still fail
// rather than end.
func TestMembersThroughPortForward(t *testing.T) {
	p := newPKI(t)
	version := etcdVersions(t)[0]
	dir := binDir(t, version)
	for _, protocol := range []string{"websocket", "spdy"} {
		t.Run(protocol, func(t *testing.T) {
			m := startEtcd(t, dir, p)
			rev := fill(t, directClient(t, m, p), 64, 256*1024)
			_, port, err := net.SplitHostPort(m.addr)
			if err != nil {
				t.Fatal(err)
			}
			secret, cm := objects(p, "etcd-client.crt", "etcd-client.key")
			members := &Members{Kube: fake.NewClientset(secret, cm), Dial: portForwarder(t, protocol).Dial}
			fmt.Sscan(port, &members.Port)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			if _, got, err := members.Status(ctx, testNS, "etcd-0"); err != nil || got != strings.TrimPrefix(version, "v") {
				t.Fatalf("status: version %q, %v", got, err)
			}
			rc, err := members.Snapshot(ctx, testNS, "etcd-0")
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
			if h := sha256.Sum256(body); !bytes.Equal(h[:], sum) {
				t.Fatalf("the last 32 bytes are not the SHA-256 of the rest")
			}
			if got := snapshotRevision(t, dir, data); got != rev {
				t.Errorf("etcdutl snapshot status: revision %d, want %d", got, rev)
			}

			rc, err = members.Snapshot(ctx, testNS, "etcd-0")
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if _, err := io.ReadFull(rc, make([]byte, 4096)); err != nil {
				t.Fatal(err)
			}
			m.cmd.Process.Kill()
			<-m.done
			n, err := io.Copy(io.Discard, rc)
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("read %d more bytes after the member was killed, then err=%v; want a stream error", n, err)
			}
			t.Log(err)
		})
	}
}
