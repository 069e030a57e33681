package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// PortForwarder opens connections to a pod's port through the apiserver's
// pods/portforward subresource, as kubectl port-forward does, without
// listening on any local socket.
type PortForwarder struct {
	Config *rest.Config
	Client kubernetes.Interface
	// Protocol is "websocket" (the default: SPDY tunnelled over WebSocket,
	// falling back to SPDY when the apiserver cannot upgrade, as kubectl
	// 1.32 does) or "spdy".
	//
	// Unlike exec's WebSocket protocol (see executor), the port-forward
	// tunnel has no heartbeat that a blocked reader starves: the WebSocket
	// carries SPDY frames, SPDY pings only log when unanswered, and nothing
	// sets a read deadline. A slow consumer holds the stream back through
	// SPDY's frame queue and TCP, on both protocols. The tests check both
	// against the kubelet's own port-forward server behind the apiserver's
	// own tunnel: a reader standing still past the ping period neither
	// fails the stream nor grows the heap, and both carry the same rate
	// (about 300 MiB/s on loopback); WebSocket is the default because it
	// is kubectl's and SPDY is on its way out upstream.
	Protocol string
}

// requestID numbers the port-forward requests of this process, as the
// kubelet matches a data stream to its error stream by this header.
var requestID atomic.Int64

// Dial returns a net.Conn to port of the pod; closing it ends the forwarded
// stream (and its connection). Each Dial opens its own connection to the
// apiserver, so one stream never waits behind another.
func (p *PortForwarder) Dial(ctx context.Context, namespace, pod string, port int) (net.Conn, error) {
	target := fmt.Sprintf("%s/%s:%d", namespace, pod, port)
	u := p.Client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	dialer, err := p.dialer(u)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s: %w", target, err)
	}
	conn, err := dialWithContext(ctx, dialer)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s: %w", target, err)
	}
	c, err := openStreams(conn, target, port)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("port-forward to %s: %w", target, err)
	}
	return c, nil
}

// dialer picks the protocol as described on Protocol.
func (p *PortForwarder) dialer(pu *url.URL) (httpstream.Dialer, error) {
	transport, upgrader, err := spdy.RoundTripperFor(p.Config)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, pu)
	switch p.Protocol {
	case "spdy":
		return spdyDialer, nil
	case "", "websocket":
		ws, err := portforward.NewSPDYOverWebsocketDialer(pu, p.Config)
		if err != nil {
			return nil, err
		}
		return portforward.NewFallbackDialer(ws, spdyDialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		}), nil
	default:
		return nil, fmt.Errorf("unknown port-forward protocol %q: use websocket or spdy", p.Protocol)
	}
}

// dialWithContext bounds the upgrade, which client-go runs without a
// context, by ctx: a connection that arrives after ctx ended is closed.
func dialWithContext(ctx context.Context, d httpstream.Dialer) (httpstream.Connection, error) {
	type result struct {
		conn httpstream.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, _, err := d.Dial(portforward.PortForwardProtocolV1Name)
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// openStreams creates the error and data streams of one forwarded
// connection, as kubectl's port-forward does for each accepted socket.
func openStreams(conn httpstream.Connection, target string, port int) (*forwardedConn, error) {
	headers := http.Header{}
	headers.Set(corev1.StreamType, corev1.StreamTypeError)
	headers.Set(corev1.PortHeader, strconv.Itoa(port))
	headers.Set(corev1.PortForwardRequestIDHeader, strconv.FormatInt(requestID.Add(1), 10))
	errorStream, err := conn.CreateStream(headers)
	if err != nil {
		return nil, fmt.Errorf("create error stream: %w", err)
	}
	// The client never writes on the error stream.
	errorStream.Close()
	headers.Set(corev1.StreamType, corev1.StreamTypeData)
	dataStream, err := conn.CreateStream(headers)
	if err != nil {
		return nil, fmt.Errorf("create data stream: %w", err)
	}
	c := &forwardedConn{conn: conn, data: dataStream, errStream: errorStream, target: target, errDone: make(chan struct{})}
	go c.readErrorStream()
	return c, nil
}

// forwardedConn is one forwarded stream as a net.Conn.
type forwardedConn struct {
	conn      httpstream.Connection
	data      httpstream.Stream
	errStream httpstream.Stream
	target    string

	// errDone is closed once the error stream ended; remoteErr then holds
	// what the kubelet reported on it (e.g. a refused connection), if anything.
	errDone   chan struct{}
	remoteErr error

	closeOnce sync.Once
	closeErr  error
}

var _ net.Conn = (*forwardedConn)(nil)

// readErrorStream waits for the kubelet's verdict on the stream: the kubelet
// writes a message there when it cannot reach the port or the copy failed,
// and closes the stream when forwarding ends.
func (c *forwardedConn) readErrorStream() {
	defer close(c.errDone)
	msg, err := io.ReadAll(c.errStream)
	switch {
	case len(msg) > 0:
		c.remoteErr = fmt.Errorf("port-forward to %s: %s", c.target, oneLine(string(msg)))
	case err != nil && !errors.Is(err, io.EOF):
		c.remoteErr = fmt.Errorf("port-forward to %s: error stream: %w", c.target, err)
	}
}

// oneLine keeps a remote message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// errAfterGrace is how long Read waits, once the data stream ended, for the
// error stream to say why: the kubelet closes both at the same moment.
const errAfterGrace = 5 * time.Second

// Read reads from the forwarded port. When the data stream ends, the
// kubelet's message on the error stream, if any, is the error returned.
func (c *forwardedConn) Read(b []byte) (int, error) {
	n, err := c.data.Read(b)
	if err == nil {
		return n, nil
	}
	select {
	case <-c.errDone:
	case <-c.conn.CloseChan():
	case <-time.After(errAfterGrace):
	}
	select {
	case <-c.errDone:
		if c.remoteErr != nil {
			return n, c.remoteErr
		}
	default:
	}
	if errors.Is(err, io.EOF) {
		return n, io.EOF
	}
	return n, fmt.Errorf("port-forward to %s: %w", c.target, err)
}

// Write writes to the forwarded port.
func (c *forwardedConn) Write(b []byte) (int, error) {
	n, err := c.data.Write(b)
	if err != nil {
		select {
		case <-c.errDone:
			if c.remoteErr != nil {
				return n, c.remoteErr
			}
		default:
		}
		return n, fmt.Errorf("port-forward to %s: %w", c.target, err)
	}
	return n, nil
}

// Close ends the forwarded stream and closes its connection to the apiserver.
func (c *forwardedConn) Close() error {
	c.closeOnce.Do(func() {
		c.data.Reset()
		c.conn.RemoveStreams(c.errStream, c.data)
		c.closeErr = c.conn.Close()
	})
	return c.closeErr
}

// LocalAddr names this end of the stream; there is no local socket.
func (c *forwardedConn) LocalAddr() net.Addr { return forwardAddr("local") }

// RemoteAddr names the pod and port, e.g. "ns/etcd-0:2379".
func (c *forwardedConn) RemoteAddr() net.Addr { return forwardAddr(c.target) }

// errNoDeadlines is returned by the deadline setters. A forwarded stream
// has no deadline of its own (client-go's httpstream offers none), and
// neither gRPC's client transport nor crypto/tls set one: they bound their
// waits with contexts and by closing the connection, which works here.
var errNoDeadlines = errors.New("port-forward connection: deadlines are not supported; close the connection instead")

// SetDeadline is not supported; see errNoDeadlines.
func (c *forwardedConn) SetDeadline(time.Time) error { return errNoDeadlines }

// SetReadDeadline is not supported; see errNoDeadlines.
func (c *forwardedConn) SetReadDeadline(time.Time) error { return errNoDeadlines }

// SetWriteDeadline is not supported; see errNoDeadlines.
func (c *forwardedConn) SetWriteDeadline(time.Time) error { return errNoDeadlines }

// forwardAddr is the address of a forwarded stream.
type forwardAddr string

// Network is "portforward".
func (forwardAddr) Network() string { return "portforward" }

// String is the pod and port.
func (a forwardAddr) String() string { return string(a) }
