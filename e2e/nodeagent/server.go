package nodeagent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	remotecommandserver "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	// streamIdleTimeout closes an exec stream on which nothing moved for this long, the kubelet's default.
	streamIdleTimeout = 4 * time.Hour
	// logPollInterval is how often a followed container log is checked for new lines.
	logPollInterval = 250 * time.Millisecond
)

// newServer builds the kubelet API server: exec, port-forward, container logs and health.
func (a *agent) newServer() (*http.Server, error) {
	cert, err := tls.LoadX509KeyPair(a.cfg.CertFile, a.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	tlsConfig := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// SPDY and WebSocket upgrades need HTTP/1.1.
		NextProtos: []string{"http/1.1"},
	}
	if a.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(a.cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s: no certificate found", a.cfg.ClientCAFile)
		}
		// Verified when given; the API handlers require one, /healthz does not.
		tlsConfig.ClientCAs, tlsConfig.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return &http.Server{
		Addr:              a.cfg.Listen,
		Handler:           a.routes(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          a.log.StandardLog(),
		BaseContext:       func(net.Listener) context.Context { return a.ctx },
	}, nil
}

// routes are the kubelet API's paths, as the kubelet names them.
func (a *agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.Handle("/exec/{namespace}/{pod}/{container}", a.authenticated(a.handleExec))
	mux.Handle("/exec/{namespace}/{pod}/{uid}/{container}", a.authenticated(a.handleExec))
	mux.Handle("/portForward/{namespace}/{pod}", a.authenticated(a.handlePortForward))
	mux.Handle("/portForward/{namespace}/{pod}/{uid}", a.authenticated(a.handlePortForward))
	mux.Handle("GET /containerLogs/{namespace}/{pod}/{container}", a.authenticated(a.handleLogs))
	return mux
}

// authenticated refuses requests without a verified client certificate when a client CA is configured. Any
// verified client is authorised: the only client is the apiserver, which authorised the user already.
func (a *agent) authenticated(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.ClientCAFile != "" && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			http.Error(w, "a client certificate is required", http.StatusUnauthorized)
			return
		}
		h(w, r)
	})
}

// target finds the running pod and container of a request, answering 404 itself when there is none.
func (a *agent) target(w http.ResponseWriter, r *http.Request) (*podRuntime, *containerRun, bool) {
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	rt := a.runtime(ns + "/" + name)
	if rt == nil || (r.PathValue("uid") != "" && types.UID(r.PathValue("uid")) != rt.uid) {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on this node", ns, name), http.StatusNotFound)
		return nil, nil, false
	}
	c := rt.container(container)
	if c == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s has no container %q", ns, name, container), http.StatusNotFound)
		return nil, nil, false
	}
	return rt, c, true
}

// handleExec serves /exec/{namespace}/{pod}/{container}?command=...&input=1&output=1&error=1&tty=1 with the
// kubelet's own streaming code (SPDY and WebSocket).
func (a *agent) handleExec(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	rt, c, ok := a.target(w, r)
	if !ok {
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "no command", http.StatusBadRequest)
		return
	}
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.log.Debug("exec", "pod", rt.key, "container", c.spec.Name, "command", cmd)
	remotecommandserver.ServeExec(w, r, &podExecutor{a: a, rt: rt, c: c}, rt.name, rt.uid, c.spec.Name, cmd, opts,
		streamIdleTimeout, remotecommandconsts.DefaultStreamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

// podExecutor runs an exec request of one container; it implements the kubelet streaming server's Executor.
type podExecutor struct {
	a  *agent
	rt *podRuntime
	c  *containerRun
}

var _ remotecommandserver.Executor = (*podExecutor)(nil)

// ExecInContainer runs cmd in the pod's sandbox. A non-zero exit is returned as a CodeExitError, which the
// streaming server sends to the client as the command's exit code.
func (e *podExecutor) ExecInContainer(ctx context.Context, _ string, _ types.UID, _ string, cmd []string, in io.Reader,
	out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	// The exec ends with the request or with the agent.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.a.ctx, cancel)()
	s := execStreams{in: in, tty: tty, resize: resize}
	var outW io.Writer
	if out != nil {
		outW = out
	}
	outW, cut := armCut(e.a.cutFor(e.rt.key, cmd), outW, cancel)
	if out != nil {
		s.out = outW
	}
	if errOut != nil {
		s.err = errOut
	}
	code, err := e.rt.exec(ctx, e.c, cmd, s)
	if cut() {
		e.a.log.Warn("exec stream cut (injected fault)", "pod", e.rt.key, "command", cmd)
		return errCut
	}
	// Closing the streams sends their end to the client before the status: without it the connection's teardown
	// can overtake the last data frames. Container runtimes do the same.
	for _, w := range []io.WriteCloser{out, errOut} {
		if w != nil {
			_ = w.Close()
		}
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

// handleLogs serves /containerLogs/{namespace}/{pod}/{container}?follow=true&tailLines=N from the container's log
// file, for kubectl logs.
func (a *agent) handleLogs(w http.ResponseWriter, r *http.Request) {
	rt, c, ok := a.target(w, r)
	if !ok {
		return
	}
	f, err := os.Open(rt.logPath(c.spec.Name))
	if errors.Is(err, os.ErrNotExist) {
		w.Header().Set("Content-Type", "text/plain")
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain")
	q := r.URL.Query()
	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 {
		data, err := io.ReadAll(f)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(lastLines(data, n))
	} else if _, err := io.Copy(w, bufio.NewReader(f)); err != nil {
		return
	}
	if q.Get("follow") != "true" {
		return
	}
	flusher, _ := w.(http.Flusher)
	for {
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-rt.ctx.Done():
			return
		case <-time.After(logPollInterval):
		}
		if _, err := io.Copy(w, f); err != nil {
			return
		}
	}
}

// lastLines returns the last n lines of data.
func lastLines(data []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(data[:end], '\n')
		if j < 0 {
			return data
		}
		end = j
	}
	return data[end+1:]
}
