package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// Executor runs commands in pods through the apiserver's pods/exec
// subresource, as `kubectl exec` does.
type Executor struct {
	Config *rest.Config
	Client kubernetes.Interface
	// Protocol is "spdy" (the default) or "websocket".
	Protocol string
}

// Exec runs cmd in the container and streams its standard streams. A
// non-zero exit status comes back as an *ExitError.
func (e *Executor) Exec(ctx context.Context, namespace, pod, container string, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	req := e.Client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container,
			Command:   cmd,
			Stdin:     stdin != nil,
			Stdout:    stdout != nil,
			Stderr:    stderr != nil,
		}, scheme.ParameterCodec)
	exec, err := e.executor(req.URL())
	if err != nil {
		return err
	}
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	var exitErr utilexec.ExitError
	if errors.As(err, &exitErr) && exitErr.Exited() {
		return &ExitError{Pod: namespace + "/" + pod, Command: cmd, Code: exitErr.ExitStatus()}
	}
	if err != nil {
		return fmt.Errorf("exec in %s/%s: %w", namespace, pod, err)
	}
	return nil
}

// executor picks the streaming protocol. SPDY is the default: its flow
// control lets a slow consumer (an upload at S3's pace) hold the stream back
// without failing it, while client-go's WebSocket reader stops serving its
// heartbeat when the consumer blocks and then fails the stream. WebSocket,
// with SPDY as fallback as kubectl does, is chosen with HCPSNAP_EXEC_PROTOCOL=websocket.
func (e *Executor) executor(u *url.URL) (remotecommand.Executor, error) {
	spdy, err := remotecommand.NewSPDYExecutor(e.Config, "POST", u)
	if err != nil || e.Protocol != "websocket" {
		return spdy, err
	}
	ws, err := remotecommand.NewWebSocketExecutor(e.Config, "GET", u.String())
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// ExitError is a command in a pod that ended with a non-zero status.
type ExitError struct {
	Pod     string
	Command []string
	Code    int
}

// Error names the pod, the program and the status; not the arguments, which
// could hold paths a user wants kept out of logs.
func (e *ExitError) Error() string {
	prog := ""
	if len(e.Command) > 0 {
		prog = e.Command[0]
		if len(e.Command) > 1 && !strings.HasPrefix(e.Command[1], "-") {
			prog += " " + e.Command[1]
		}
	}
	return fmt.Sprintf("%s in pod %s exited with status %d", prog, e.Pod, e.Code)
}
