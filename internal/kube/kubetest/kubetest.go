// Package kubetest serves pods/portforward in-process, for the tests of
// the packages that dial through it: the kubelet's own port-forward server
// (k8s.io/kubelet), behind the apiserver's own WebSocket-to-SPDY tunnel
// (k8s.io/apiserver) for WebSocket requests, as a 1.32 apiserver with
// PortForwardWebsockets does. Its one pod's ports are the ports of
// 127.0.0.1. Only tests import it, so none of it is in the binary.
//
// Layer: adapter test support. It imports nothing of hcpsnap.
package kubetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	"k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	kubeletpf "k8s.io/kubelet/pkg/cri/streaming/portforward"
)

// loopbackForwarder copies between a forwarded stream and 127.0.0.1:port.
type loopbackForwarder struct{}

func (loopbackForwarder) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	defer conn.Close()
	errc := make(chan error, 2)
	go func() { _, err := io.Copy(stream, conn); errc <- err }()
	go func() { _, err := io.Copy(conn, stream); errc <- err }()
	return <-errc
}

// PortForwardServer starts an apiserver stand-in that serves
// pods/portforward of namespace/pod, stopped when the test ends. It returns
// a client configuration for it and the number of WebSocket tunnels served
// so far.
func PortForwardServer(t testing.TB, namespace, pod string) (*rest.Config, func() int) {
	t.Helper()
	var mu sync.Mutex
	tunnels := 0
	kubelet := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kubeletpf.ServePortForward(w, r, loopbackForwarder{}, pod, "", nil, time.Hour, 30*time.Second,
			[]string{portforward.PortForwardProtocolV1Name})
	})
	tunnel := proxy.NewTunnelingHandler(kubelet)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !strings.HasSuffix(r.URL.Path, "/namespaces/"+namespace+"/pods/"+pod+"/portforward"):
			http.NotFound(w, r)
		case wsstream.IsWebSocketRequestWithTunnelingProtocol(r):
			mu.Lock()
			tunnels++
			mu.Unlock()
			tunnel.ServeHTTP(w, r)
		default:
			kubelet.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}, func() int {
		mu.Lock()
		defer mu.Unlock()
		return tunnels
	}
}
