package kube

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/hcpsnap/hcpsnap/internal/kube/kubetest"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/portforward"
)

// The fake apiserver below serves pods/portforward with the kubelet's own
// port-forward server (k8s.io/kubelet), behind the apiserver's own
// WebSocket-to-SPDY tunnel (k8s.io/apiserver) for WebSocket requests, as a
// 1.32 apiserver with PortForwardWebsockets does. Its "pod" is the loopback
// interface: a forwarded port is a port on 127.0.0.1.

// fakeAPIServer returns a PortForwarder client of an in-process server
// speaking both protocols (kubetest); tunnels counts the WebSocket tunnels
// served.
func fakeAPIServer(t *testing.T, protocol string) (*PortForwarder, func() int) {
	t.Helper()
	cfg, tunnels := kubetest.PortForwardServer(t, "ns", "etcd-0")
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &PortForwarder{Config: cfg, Client: client, Protocol: protocol}, tunnels
}

// block is the repeated content a data server sends.
var block = func() []byte {
	b := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(b)
	return b
}()

// dataServer sends mib MiB of block to each connection, then closes it.
func dataServer(t *testing.T, mib int) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for range mib {
					if _, err := c.Write(block); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func wantSum(mib int) []byte {
	h := sha256.New()
	for range mib {
		h.Write(block)
	}
	return h.Sum(nil)
}

// TestPortForwardCarriesStream reads a whole stream through each protocol,
// checks it byte for byte and that the WebSocket tunnel was the one used.
func TestPortForwardCarriesStream(t *testing.T) {
	const mib = 64
	port := dataServer(t, mib)
	for _, protocol := range []string{"", "websocket", "spdy"} {
		t.Run("protocol="+protocol, func(t *testing.T) {
			pf, tunnels := fakeAPIServer(t, protocol)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			conn, err := pf.Dial(ctx, "ns", "etcd-0", port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := conn.RemoteAddr().String(); got != fmt.Sprintf("ns/etcd-0:%d", port) {
				t.Errorf("remote address %q", got)
			}
			h := sha256.New()
			n, err := io.Copy(h, conn)
			if err != nil {
				t.Fatalf("after %d bytes: %v", n, err)
			}
			if n != mib<<20 || !bytes.Equal(h.Sum(nil), wantSum(mib)) {
				t.Fatalf("read %d bytes with another content, want %d MiB of the data sent", n, mib)
			}
			if want := protocol != "spdy"; (tunnels() > 0) != want {
				t.Errorf("%d WebSocket tunnels served; want tunnel: %v", tunnels(), want)
			}
			// For the record (make bench measures; no timing is asserted).
			t.Logf("%d MiB in %v: %.0f MiB/s", mib, time.Since(start).Round(time.Millisecond),
				float64(mib)/time.Since(start).Seconds())
		})
	}
}

// TestPortForwardSlowReader stands still for longer than the tunnel's ping
// period (portforward.PingPeriod) while the server has more to send: the
// stream must be held back, neither failed nor buffered in memory, and then
// carry on to the end. This is an upload slower than etcd.
func TestPortForwardSlowReader(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses for longer than the tunnel's ping period")
	}
	const mib = 64
	port := dataServer(t, mib)
	// One at a time: the heap is shared.
	for _, protocol := range []string{"websocket", "spdy"} {
		t.Run(protocol, func(t *testing.T) {
			pf, _ := fakeAPIServer(t, protocol)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			conn, err := pf.Dial(ctx, "ns", "etcd-0", port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			h := sha256.New()
			if _, err := io.CopyN(h, conn, 1<<20); err != nil {
				t.Fatal(err)
			}
			time.Sleep(portforward.PingPeriod + 2*time.Second)
			runtime.GC()
			runtime.ReadMemStats(&after)
			// Both ends of the fake share this heap.
			grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("heap grew by %d KiB while the reader stood still", grown>>10)
			if grown > 16<<20 {
				t.Errorf("heap grew by %d MiB while the reader stood still: the stream is not held back", grown>>20)
			}
			n, err := io.Copy(h, conn)
			if err != nil {
				t.Fatalf("after the pause, %d bytes: %v", n, err)
			}
			if n+1<<20 != mib<<20 || !bytes.Equal(h.Sum(nil), wantSum(mib)) {
				t.Fatalf("read %d bytes with another content, want %d MiB of the data sent", n+1<<20, mib)
			}
		})
	}
}

// TestPortForwardRefused forwards to a port nothing listens on: the
// kubelet's message on the error stream is the Read error, on one line.
func TestPortForwardRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	for _, protocol := range []string{"websocket", "spdy"} {
		t.Run(protocol, func(t *testing.T) {
			pf, _ := fakeAPIServer(t, protocol)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pf.Dial(ctx, "ns", "etcd-0", port)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = conn.Read(make([]byte, 1))
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("read: %v, want the kubelet's error", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, fmt.Sprintf("ns/etcd-0:%d", port)) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming the pod, the port and the refusal", msg)
			}
		})
	}
}

// TestPortForwardDialErrors covers what fails before any stream: an unknown
// protocol, a pod the apiserver does not serve, and a cancelled context.
func TestPortForwardDialErrors(t *testing.T) {
	pf, _ := fakeAPIServer(t, "")
	ctx := context.Background()
	bad := *pf
	bad.Protocol = "http3"
	if _, err := bad.Dial(ctx, "ns", "etcd-0", 2379); err == nil || !strings.Contains(err.Error(), `"http3"`) {
		t.Errorf("unknown protocol: %v", err)
	}
	if _, err := pf.Dial(ctx, "ns", "etcd-9", 2379); err == nil || !strings.Contains(err.Error(), "ns/etcd-9:2379") {
		t.Errorf("unknown pod: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := pf.Dial(cancelled, "ns", "etcd-0", 2379); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}
