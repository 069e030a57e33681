package nodeagent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/log"
	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// These tests serve the agent's kubelet API on a test server and forward to real TCP listeners on loopback that
// stand in for the pods, with client-go's port-forward client (SPDY) and a WebSocket client of the v4 protocol.

const testNode = "node-a"

// forwardEnv is an agent serving the kubelet API, with pods known to its lister.
type forwardEnv struct {
	a     *agent
	pods  cache.Indexer
	srv   *httptest.Server
	state string
}

func newForwardEnv(t *testing.T) *forwardEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	state := t.TempDir()
	a := &agent{
		cfg: Config{NodeName: testNode, StateDir: state}, ctx: ctx, log: log.New(io.Discard),
		lister: corelisters.NewPodLister(idx), pods: map[string]*podRuntime{}, terminating: map[types.UID]bool{},
	}
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)
	return &forwardEnv{a: a, pods: idx, srv: srv, state: state}
}

// addPod adds a pod bound to node with IP ip; when running, the agent runs it.
func (e *forwardEnv) addPod(t *testing.T, name, node, ip string, running bool) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node},
	}
	if err := e.pods.Add(pod); err != nil {
		t.Fatal(err)
	}
	if running {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		e.a.pods["ns/"+name] = &podRuntime{
			a: e.a, key: "ns/" + name, uid: pod.UID, name: name, namespace: "ns", ip: ip, ctx: ctx, cancel: cancel,
		}
	}
	return pod
}

// listenInPod listens where a process of the pod with IP ip that listens on localhost is found, and serves each
// connection with serve; it returns the port.
func listenInPod(t *testing.T, ip string, serve func(net.Conn)) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(localhostFor(ip), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

func (e *forwardEnv) spdyDialer(t *testing.T, path string) httpstream.Dialer {
	t.Helper()
	transport, upgrader, err := spdy.RoundTripperFor(&rest.Config{Host: e.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(e.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	return spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
}

// clientForward runs client-go's port-forward client (kubectl's) to port of the pod at path and returns the local
// address it listens on.
func (e *forwardEnv) clientForward(t *testing.T, path string, port int32) string {
	t.Helper()
	stop, ready := make(chan struct{}), make(chan struct{})
	var errOut bytes.Buffer
	pf, err := portforward.NewOnAddresses(e.spdyDialer(t, path), []string{"127.0.0.1"},
		[]string{"0:" + strconv.Itoa(int(port))}, stop, ready, io.Discard, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port-forward: %v (%s)", err, errOut.String())
	}
	ports, err := pf.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local)))
}

func TestPortForwardSPDYCopiesBothWaysAndCloses(t *testing.T) {
	e := newForwardEnv(t)
	e.addPod(t, "etcd-0", testNode, "127.0.9.11", true)
	podDone := make(chan error, 1)
	port := listenInPod(t, "127.0.9.11", func(c net.Conn) {
		// An echo server that closes once the client has ended its side.
		_, err := io.Copy(c, c)
		podDone <- err
	})
	local := e.clientForward(t, "/portForward/ns/etcd-0", port)

	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := make([]byte, 4<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = conn.Write(payload)
		_ = conn.(*net.TCPConn).CloseWrite()
	}()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read back: %v after %d bytes", err, len(got))
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo differs: %d bytes back of %d", len(got), len(payload))
	}
	// The client's end reached the pod, and the pod's end reached the client (ReadAll returned).
	select {
	case err := <-podDone:
		if err != nil {
			t.Fatalf("pod side: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pod never saw the client's end of the stream")
	}
}

func TestPortForwardWithUID(t *testing.T) {
	e := newForwardEnv(t)
	pod := e.addPod(t, "etcd-0", testNode, "127.0.9.12", true)
	port := listenInPod(t, "127.0.9.12", func(c net.Conn) { _, _ = io.WriteString(c, "hello from the pod") })
	local := e.clientForward(t, "/portForward/ns/etcd-0/"+string(pod.UID), port)
	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "hello from the pod" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestPortForwardWebSocket(t *testing.T) {
	e := newForwardEnv(t)
	e.addPod(t, "etcd-0", testNode, "127.0.9.13", true)
	port := listenInPod(t, "127.0.9.13", func(c net.Conn) {
		line := make([]byte, 5)
		if _, err := io.ReadFull(c, line); err == nil {
			_, _ = fmt.Fprintf(c, "hello %s", line)
		}
	})
	u := strings.Replace(e.srv.URL, "http://", "ws://", 1) + "/portForward/ns/etcd-0?port=" + strconv.Itoa(int(port))
	dialer := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := dialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, "world"...)); err != nil {
		t.Fatal(err)
	}
	// Every channel starts with the port (2 bytes, little endian); then channel 0 carries the data and channel 1
	// the errors. The server closes the connection once the pod has closed its side.
	channels := map[byte][]byte{}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the stream did not end after the pod closed: %q", channels)
			}
			break
		}
		if len(msg) == 0 {
			continue
		}
		channels[msg[0]] = append(channels[msg[0]], msg[1:]...)
	}
	for ch, data := range channels {
		if len(data) < 2 || binary.LittleEndian.Uint16(data) != uint16(port) {
			t.Fatalf("channel %d does not start with the port: %q", ch, data)
		}
		channels[ch] = data[2:]
	}
	if got := string(channels[0]); got != "hello world" {
		t.Errorf("data = %q, want %q", got, "hello world")
	}
	if got := string(channels[1]); got != "" {
		t.Errorf("error channel = %q, want nothing", got)
	}
}

// rawStreams opens the error and data streams of one forwarded connection, as client-go does.
func rawStreams(t *testing.T, conn httpstream.Connection, port int32, id int) (data, errs httpstream.Stream) {
	t.Helper()
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(int(port)))
	h.Set(corev1.PortForwardRequestIDHeader, strconv.Itoa(id))
	errs, err := conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	errs.Close() // the client sends nothing on it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err = conn.CreateStream(h)
	if err != nil {
		t.Fatal(err)
	}
	return data, errs
}

// readForwarded reads what one forwarded connection delivers: its data and its error channel.
func readForwarded(t *testing.T, conn httpstream.Connection, port int32, id int) ([]byte, string) {
	t.Helper()
	data, errs := rawStreams(t, conn, port, id)
	errText := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(errs)
		errText <- string(b)
	}()
	got, _ := io.ReadAll(data)
	select {
	case s := <-errText:
		return got, s
	case <-time.After(10 * time.Second):
		t.Fatal("the error stream never ended")
		return nil, ""
	}
}

func dialSPDY(t *testing.T, d httpstream.Dialer) httpstream.Connection {
	t.Helper()
	conn, proto, err := d.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		t.Fatal(err)
	}
	if proto != portforward.PortForwardProtocolV1Name {
		t.Fatalf("protocol %q", proto)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestPortForwardCut(t *testing.T) {
	e := newForwardEnv(t)
	e.addPod(t, "etcd-0", testNode, "127.0.9.14", true)
	const big = 16 << 20
	podErr := make(chan error, 4)
	bigPort := listenInPod(t, "127.0.9.14", func(c net.Conn) {
		// A large response, written as fast as the reader takes it.
		_, err := c.Write(bytes.Repeat([]byte{'x'}, big))
		podErr <- err
	})
	smallPort := listenInPod(t, "127.0.9.14", func(c net.Conn) {
		_, _ = c.Write(bytes.Repeat([]byte{'y'}, 700<<10))
	})
	const budget = 1 << 20
	if err := WriteFaults(e.state, Faults{CutPortForward: []CutPortForward{
		{Pod: "ns/etcd-0", Port: bigPort, AfterBytes: budget},
		{Pod: "ns/etcd-0", Port: smallPort, AfterBytes: budget},
		{Pod: "ns/other", AfterBytes: 0},
	}}); err != nil {
		t.Fatal(err)
	}
	conn := dialSPDY(t, e.spdyDialer(t, "/portForward/ns/etcd-0"))

	t.Run("cut after the budget", func(t *testing.T) {
		got, errText := readForwarded(t, conn, bigPort, 1)
		if len(got) > budget {
			t.Errorf("the client got %d bytes, more than the %d of the cut", len(got), budget)
		}
		if !strings.Contains(errText, "injected fault") {
			t.Errorf("error channel = %q, want the cut", errText)
		}
		select {
		case err := <-podErr:
			if err == nil {
				t.Error("the pod wrote its whole response: its connection was not cut")
			}
		case <-time.After(10 * time.Second):
			t.Error("the pod's connection was left open")
		}
	})
	t.Run("each stream counts on its own", func(t *testing.T) {
		for id := 2; id <= 3; id++ {
			got, errText := readForwarded(t, conn, smallPort, id)
			if len(got) != 700<<10 || errText != "" {
				t.Errorf("stream %d: %d bytes, error %q; want the whole 700 KiB", id, len(got), errText)
			}
		}
	})
	t.Run("no cut without a match", func(t *testing.T) {
		if err := WriteFaults(e.state, Faults{CutPortForward: []CutPortForward{{Pod: "ns/etcd-0", Port: smallPort, AfterBytes: 10}}}); err != nil {
			t.Fatal(err)
		}
		got, errText := readForwarded(t, conn, bigPort, 4)
		if len(got) != big || errText != "" {
			t.Errorf("%d bytes, error %q; want the whole response", len(got), errText)
		}
		got, errText = readForwarded(t, conn, smallPort, 5)
		if len(got) > 10 || !strings.Contains(errText, "injected fault") {
			t.Errorf("%d bytes, error %q; want a cut after 10 bytes", len(got), errText)
		}
	})
}

func TestPortForwardRefusals(t *testing.T) {
	e := newForwardEnv(t)
	e.addPod(t, "etcd-0", testNode, "127.0.9.15", true)
	e.addPod(t, "stopped", testNode, "127.0.9.16", false)
	e.addPod(t, "elsewhere", "node-b", "127.0.9.17", false)
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/portForward/ns/nope", http.StatusNotFound, "pod does not exist"},
		{"/portForward/other/etcd-0", http.StatusNotFound, "pod does not exist"},
		{"/portForward/ns/elsewhere", http.StatusNotFound, "pod does not exist"},
		{"/portForward/ns/etcd-0/uid-old", http.StatusNotFound, "pod not found"},
		{"/portForward/ns/stopped", http.StatusInternalServerError, `pod not found ("stopped_ns")`},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Post(e.srv.URL+tt.path, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code || strings.TrimSpace(string(body)) != tt.body {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.code, tt.body)
			}
			// client-go's dialer reports the kubelet's answer.
			if _, _, err := e.spdyDialer(t, tt.path).Dial(portforward.PortForwardProtocolV1Name); err == nil {
				t.Error("dial succeeded")
			}
		})
	}
	t.Run("nothing listens on the port", func(t *testing.T) {
		ln, err := net.Listen("tcp", net.JoinHostPort(localhostFor("127.0.9.15"), "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := int32(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		conn := dialSPDY(t, e.spdyDialer(t, "/portForward/ns/etcd-0"))
		got, errText := readForwarded(t, conn, port, 1)
		if len(got) != 0 || !strings.Contains(errText, "connection refused") {
			t.Errorf("%d bytes, error %q; want connection refused", len(got), errText)
		}
	})
	t.Run("websocket without a port", func(t *testing.T) {
		u := strings.Replace(e.srv.URL, "http://", "ws://", 1) + "/portForward/ns/etcd-0"
		_, resp, err := (&websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}}).Dial(u, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("got %v, %v; want 400", resp, err)
		}
	})
}

func TestPortForwardEndsWithThePod(t *testing.T) {
	e := newForwardEnv(t)
	e.addPod(t, "etcd-0", testNode, "127.0.9.18", true)
	var wg sync.WaitGroup
	wg.Add(1)
	port := listenInPod(t, "127.0.9.18", func(c net.Conn) {
		wg.Done()
		_, _ = io.Copy(io.Discard, c) // a pod that keeps the connection open
	})
	conn := dialSPDY(t, e.spdyDialer(t, "/portForward/ns/etcd-0"))
	data, _ := rawStreams(t, conn, port, 1)
	wg.Wait()
	e.a.pods["ns/etcd-0"].cancel() // the pod stops
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(data); done <- err }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the forwarded stream outlived the pod")
	}
}

func TestCopyToClientBudget(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789"), 10000)
	tests := []struct {
		budget  int64
		want    int
		wantCut bool
	}{
		{-1, len(src), false},
		{1, 1, true},
		{copyBufferSize, copyBufferSize, true},
		{int64(len(src)) - 1, len(src) - 1, true},
		{int64(len(src)) + 1, len(src), false},
	}
	for _, tt := range tests {
		t.Run(strconv.FormatInt(tt.budget, 10), func(t *testing.T) {
			var out bytes.Buffer
			err := copyToClient(&out, bytes.NewReader(src), tt.budget)
			if out.Len() != tt.want || errors.Is(err, errPortForwardCut) != tt.wantCut {
				t.Errorf("wrote %d bytes, err %v; want %d bytes, cut %v", out.Len(), err, tt.want, tt.wantCut)
			}
			if !bytes.Equal(out.Bytes(), src[:out.Len()]) {
				t.Error("the bytes written are not the pod's")
			}
		})
	}
}
