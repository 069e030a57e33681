package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"
)

const (
	// dialTimeout bounds the connection to the pod's port.
	dialTimeout = 10 * time.Second
	// halfCloseGrace is how long the pod has to finish its side once the client has ended its own; a pod that
	// ignores the half-close is then disconnected, as container runtimes do.
	halfCloseGrace = 5 * time.Second
	// copyBufferSize is the size of the buffer of each direction of a forwarded stream.
	copyBufferSize = 32 << 10
)

// errPortForwardCut is how a cut forwarded stream ends; the client reads it on the stream's error channel.
var errPortForwardCut = errors.New("forwarded stream cut by the node agent (injected fault)")

// handlePortForward serves /portForward/{namespace}/{pod}[/{uid}] with the kubelet's own streaming code (SPDY, and
// WebSocket with ?port=N). It answers as the kubelet does: 404 for a pod that is not bound to this node or whose UID
// differs, 500 for a pod bound here that does not run (not started, finished or stopping).
func (a *agent) handlePortForward(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("pod")
	pod, err := a.lister.Pods(ns).Get(name)
	if err != nil || pod.Spec.NodeName != a.cfg.NodeName {
		if err != nil && !apierrors.IsNotFound(err) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		http.Error(w, "pod does not exist", http.StatusNotFound)
		return
	}
	if uid := r.PathValue("uid"); uid != "" && types.UID(uid) != pod.UID {
		http.Error(w, "pod not found", http.StatusNotFound)
		return
	}
	rt := a.runtime(ns + "/" + name)
	if rt == nil || rt.uid != pod.UID || rt.ctx.Err() != nil {
		http.Error(w, fmt.Sprintf("pod not found (%q)", name+"_"+ns), http.StatusInternalServerError)
		return
	}
	a.log.Debug("port-forward", "pod", rt.key, "ports", opts.Ports)
	portforward.ServePortForward(w, r, &podForwarder{a: a, rt: rt}, rt.name, rt.uid, opts,
		streamIdleTimeout, remotecommandconsts.DefaultStreamCreationTimeout, portforward.SupportedProtocols)
}

// podForwarder forwards the streams of one port-forward request to its pod; it implements the kubelet streaming
// server's PortForwarder.
type podForwarder struct {
	a  *agent
	rt *podRuntime
}

var _ portforward.PortForwarder = (*podForwarder)(nil)

// PortForward connects one forwarded stream to the pod's port. A kubelet dials localhost:port inside the pod's
// network namespace; here every pod shares the host's network and its localhost is the private address that
// localhostFor gives its IP, which is where a process of the pod that listens on localhost (or on every address)
// is found. The faults file is read at every new stream.
func (f *podForwarder) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	// The stream ends with the pod or with the agent: hijacked connections outlive the HTTP server's shutdown.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(f.a.ctx, cancel)()
	defer context.AfterFunc(f.rt.ctx, cancel)()
	addr := net.JoinHostPort(localhostFor(f.rt.ip), strconv.Itoa(int(port)))
	cut := f.a.portForwardCutFor(f.rt.key, port)
	err := forward(ctx, addr, stream, cut)
	if errors.Is(err, errPortForwardCut) {
		f.a.log.Warn("port-forward stream cut (injected fault)", "pod", f.rt.key, "port", port, "afterBytes", cut.AfterBytes)
	}
	return err
}

// forward connects stream to the TCP address addr and copies both ways. When the pod ends its side, what it sent
// is delivered and the stream ends. When the client ends its side, the pod's connection is half-closed and the pod
// has halfCloseGrace to answer and close. A cut, when given, ends the stream abruptly once AfterBytes bytes of the
// pod's data went to the client: the pod's connection is reset and errPortForwardCut is returned, which the
// streaming server reports on the stream's error channel and answers by resetting the stream.
func forward(ctx context.Context, addr string, stream io.ReadWriteCloser, cut *CutPortForward) error {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	budget := int64(-1)
	if cut != nil {
		budget = cut.AfterBytes
	}
	abort := func() error {
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // close with a reset, as a lost connection ends for the pod
		}
		_ = conn.Close()
		return errPortForwardCut
	}
	if budget == 0 {
		return abort()
	}
	fromPod := make(chan error, 1)
	go func() { fromPod <- copyToClient(stream, conn, budget) }()
	fromClient := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stream)
		if err == nil {
			if tcp, ok := conn.(*net.TCPConn); ok {
				err = tcp.CloseWrite()
			}
		}
		fromClient <- err
	}()
	var grace <-chan time.Time
	for {
		select {
		case err := <-fromPod:
			if errors.Is(err, errPortForwardCut) {
				return abort()
			}
			return err
		case err := <-fromClient:
			if err != nil {
				return err
			}
			t := time.NewTimer(halfCloseGrace)
			defer t.Stop()
			grace = t.C
		case <-grace:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// copyToClient copies the pod's data to the client until the pod ends its side. With a budget of zero or more, it
// returns errPortForwardCut once that many bytes were written; a negative budget is no limit.
func copyToClient(client io.Writer, pod io.Reader, budget int64) error {
	buf := make([]byte, copyBufferSize)
	for {
		n, rerr := pod.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if budget >= 0 && int64(n) >= budget {
				chunk = buf[:budget]
			}
			if _, err := client.Write(chunk); err != nil {
				return err
			}
			if budget >= 0 {
				if budget -= int64(len(chunk)); budget == 0 {
					return errPortForwardCut
				}
			}
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
