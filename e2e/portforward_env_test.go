//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/hcpsnap/hcpsnap/e2e/nodeagent"
)

// etcdServerName is the name a client of a member's localhost:2379 verifies, as
// hcpsnap does: HyperShift's serving certificate has DNS names only, localhost
// among them.
const etcdServerName = "localhost"

// TestKubectlPortForwardReachesEtcdMember runs `kubectl port-forward` to
// etcd-0's port 2379 and etcdctl on the host against the forwarded port, with
// the fixture's client certificate and the server name localhost: the answer
// is etcd-0's own member.
func TestKubectlPortForwardReachesEtcdMember(t *testing.T) {
	env := loadEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kubectl := exec.CommandContext(ctx, filepath.Join(env.vars["LOCALENV_BIN_DIR"], "kubectl"),
		"-n", env.hcpNamespace, "port-forward", "pod/etcd-0", ":2379")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+env.vars["KUBECONFIG"])
	stdout, err := kubectl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	kubectl.Stderr = &stderr
	if err := kubectl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kubectl.Process.Kill()
		_ = kubectl.Wait()
	})
	// "Forwarding from 127.0.0.1:40321 -> 2379"
	forwarding := regexp.MustCompile(`^Forwarding from (?:127\.0\.0\.1|\[::1\]):(\d+) -> 2379$`)
	lines := bufio.NewScanner(stdout)
	port := ""
	for port == "" && lines.Scan() {
		if m := forwarding.FindStringSubmatch(lines.Text()); m != nil {
			port = m[1]
		}
	}
	if port == "" {
		t.Fatalf("kubectl port-forward did not forward: %s", stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	etcdctl := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, env.vars["ETCDCTL"], append([]string{
			"--endpoints=https://localhost:" + port,
			"--cacert", env.vars["LOCALENV_ETCD_CACERT"],
			"--cert", env.vars["LOCALENV_ETCD_CERT"],
			"--key", env.vars["LOCALENV_ETCD_KEY"],
			"-w", "json",
		}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("etcdctl %v through kubectl port-forward: %v (%s; kubectl: %s)", args, err, exitStderr(err), stderr.String())
		}
		return string(out)
	}
	var status []struct {
		Status struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
		} `json:"Status"`
	}
	if out := etcdctl("endpoint", "status"); json.Unmarshal([]byte(out), &status) != nil || len(status) != 1 {
		t.Fatalf("endpoint status: %q", out)
	}
	var members struct {
		Members []struct {
			ID   uint64 `json:"ID"`
			Name string `json:"name"`
		} `json:"members"`
	}
	if out := etcdctl("member", "list"); json.Unmarshal([]byte(out), &members) != nil {
		t.Fatalf("member list: %q", out)
	}
	name := ""
	for _, m := range members.Members {
		if m.ID == status[0].Status.Header.MemberID {
			name = m.Name
		}
	}
	if name != "etcd-0" {
		t.Fatalf("the forwarded port 2379 of etcd-0 answered as member %x named %q, want etcd-0's own member",
			status[0].Status.Header.MemberID, name)
	}
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// TestPortForwardCutBreaksSnapshot reads etcd-0's snapshot stream through
// client-go's port-forward (SPDY, and SPDY over WebSocket as kubectl 1.32
// dials it), whole without a fault and broken with an error once the node
// agent cuts the forwarded stream after 1 MiB.
func TestPortForwardCutBreaksSnapshot(t *testing.T) {
	env := loadEnv(t)
	const cutAfter = 1 << 20
	for _, dialer := range []string{"spdy", "websocket"} {
		t.Run(dialer, func(t *testing.T) {
			env.setFaults(t, nodeagent.Faults{})
			n, err := env.forwardedSnapshot(t, dialer)
			if err != nil {
				t.Fatalf("snapshot through the port-forward without a fault: %v after %d bytes", err, n)
			}
			if n <= 2*cutAfter {
				t.Fatalf("the snapshot has %d bytes; the cut needs a stream well over %d", n, cutAfter)
			}
			env.setFaults(t, nodeagent.Faults{CutPortForward: []nodeagent.CutPortForward{
				{Pod: env.hcpNamespace + "/etcd-0", Port: 2379, AfterBytes: cutAfter},
			}})
			t.Cleanup(func() { env.setFaults(t, nodeagent.Faults{}) })
			cut, err := env.forwardedSnapshot(t, dialer)
			if err == nil {
				t.Fatalf("the snapshot read through a stream cut after %d bytes ended without an error (%d bytes)", cutAfter, cut)
			}
			// TLS and HTTP/2 framing count in the pod's bytes too.
			if cut >= cutAfter {
				t.Fatalf("read %d snapshot bytes through a stream cut after %d", cut, cutAfter)
			}
			t.Logf("cut after %d of %d snapshot bytes: %v", cut, n, err)
		})
	}
}

// forwardedSnapshot port-forwards to etcd-0's port 2379 with client-go (dialer
// "spdy" or "websocket", SPDY tunnelled over WebSocket), reads the member's
// snapshot stream with the etcd client through it and returns how many bytes
// came and how the stream ended.
func (e *testEnv) forwardedSnapshot(t *testing.T, dialer string) (int64, error) {
	t.Helper()
	u := e.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(e.hcpNamespace).
		Name("etcd-0").SubResource("portforward").URL()
	var d httpstream.Dialer
	switch dialer {
	case "spdy":
		transport, upgrader, err := spdy.RoundTripperFor(e.restConfig)
		if err != nil {
			t.Fatal(err)
		}
		d = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	case "websocket":
		var err error
		if d, err = portforward.NewSPDYOverWebsocketDialer(u, e.restConfig); err != nil {
			t.Fatal(err)
		}
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut strings.Builder
	pf, err := portforward.NewOnAddresses(d, []string{"127.0.0.1"}, []string{"0:2379"}, stop, ready, io.Discard, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	defer func() {
		close(stop)
		<-done
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port-forward (%s): %v", dialer, err)
	}
	ports, err := pf.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://127.0.0.1:" + strconv.Itoa(int(ports[0].Local))},
		TLS:         e.etcdClientTLS(t),
		DialTimeout: 10 * time.Second,
		Context:     ctx,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("open the snapshot stream: %w", err)
	}
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}

// etcdClientTLS is the TLS configuration of a client of a member's
// localhost:2379: the fixture's client certificate and CA, server name
// localhost.
func (e *testEnv) etcdClientTLS(t *testing.T) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(e.vars["LOCALENV_ETCD_CERT"], e.vars["LOCALENV_ETCD_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(e.vars["LOCALENV_ETCD_CACERT"])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("no CA certificate in %s", e.vars["LOCALENV_ETCD_CACERT"])
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: etcdServerName, MinVersion: tls.VersionTLS12}
}
