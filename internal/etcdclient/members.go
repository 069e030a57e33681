package etcdclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Defaults match what HyperShift's control-plane-operator creates in a hosted
// control plane's namespace: Secret etcd-client-tls (keys etcd-client.crt and
// etcd-client.key), ConfigMap etcd-ca (key ca.crt), and members that listen on
// https://localhost:2379 with a serving certificate whose DNS SANs include
// "localhost".
const (
	DefaultPort         = 2379
	DefaultServerName   = "localhost"
	DefaultClientSecret = "etcd-client-tls"
	DefaultCAConfigMap  = "etcd-ca"

	// caKey is the key of the CA bundle in the ConfigMap.
	caKey = "ca.crt"
)

// clientKeyPairs are the key names of the client certificate and key
// accepted in the Secret, in order: HyperShift's own, then the names of a
// kubernetes.io/tls Secret.
var clientKeyPairs = [][2]string{{"etcd-client.crt", "etcd-client.key"}, {"tls.crt", "tls.key"}}

// Window sizes of the gRPC connection. Fixing them turns off gRPC's
// bandwidth-delay estimation, which may grow a window to 16 MiB: at most
// this much of a snapshot waits in memory when the reader (an upload) is
// slower than etcd, and etcd is held back by flow control beyond it.
// Through the apiserver's port-forward the round trip is long: measured on
// the local environment (512 MiB, SPDY), 1 MiB windows streamed 83 MB/s,
// 4 MiB 97-125, 8 MiB 137-160, 16 MiB 161-183. 8 MiB keeps most of the
// speed for a bounded 8 MiB of memory.
const (
	streamWindow = 8 << 20
	connWindow   = 8 << 20
	// maxRecvMsg bounds one message; etcd sends snapshots in 32 KiB chunks.
	maxRecvMsg = 4 << 20
	// defaultDialTimeout bounds the connection when ctx has no deadline.
	defaultDialTimeout = 30 * time.Second
)

// Members reaches the etcd members of a hosted control plane through
// port-forward.
type Members struct {
	Kube kubernetes.Interface
	// Dial opens a connection to a pod's port: kube.PortForwarder.Dial, or a
	// plain dial in tests.
	Dial func(ctx context.Context, namespace, pod string, port int) (net.Conn, error)

	// Optional overrides; zero values take the defaults above.
	Port         int
	ServerName   string
	ClientSecret string
	CAConfigMap  string
}

// Status answers from the member's own endpoint: its database size (bytes)
// and server version.
func (m *Members) Status(ctx context.Context, namespace, pod string) (dbSize int64, version string, err error) {
	cli, err := m.client(ctx, namespace, pod)
	if err != nil {
		return 0, "", err
	}
	defer cli.Close()
	// On the client's connection: cli.Status would dial the endpoint again,
	// that is open a second port-forward.
	resp, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return 0, "", m.wrap(namespace, pod, "status", err)
	}
	return resp.DbSize, resp.Version, nil
}

// Snapshot opens a snapshot stream of the member: the bolt database followed
// by etcd's 32-byte SHA-256, the same bytes `etcdctl snapshot save` writes.
// It returns once etcd sent the first bytes, that is once the member opened
// the read transaction the snapshot is taken from. A broken stream returns a
// non-EOF error from Read (gRPC ends a stream cleanly only on etcd's final
// status). Close ends the stream and the port-forward connection and frees
// everything.
//
// Memory is bounded: Read pulls one message at a time from gRPC, whose
// windows are fixed (streamWindow), so a slow reader holds etcd back instead
// of buffering the database.
func (m *Members) Snapshot(ctx context.Context, namespace, pod string) (io.ReadCloser, error) {
	cli, err := m.client(ctx, namespace, pod)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	// Called directly rather than through cli.Maintenance.Snapshot: that one
	// copies through a goroutine and pipe and may retry the call, while here
	// one call is one snapshot.
	stream, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Snapshot(sctx, &pb.SnapshotRequest{})
	if err == nil {
		var first *pb.SnapshotResponse
		if first, err = stream.Recv(); err == nil {
			return &snapshotStream{m: m, namespace: namespace, pod: pod, stream: stream, buf: first.Blob, cancel: cancel, cli: cli}, nil
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("etcd ended the snapshot stream before sending any data")
		}
	}
	cancel()
	cli.Close()
	return nil, m.wrap(namespace, pod, "snapshot", err)
}

// snapshotStream reads a snapshot one gRPC message at a time.
type snapshotStream struct {
	m              *Members
	namespace, pod string
	stream         pb.Maintenance_SnapshotClient
	buf            []byte
	err            error
	cancel         context.CancelFunc
	cli            *clientv3.Client
}

// Read returns the snapshot's bytes, io.EOF only after etcd's final status.
func (s *snapshotStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		resp, err := s.stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			s.err = io.EOF
		case err != nil:
			s.err = s.m.wrap(s.namespace, s.pod, "snapshot stream", err)
		default:
			s.buf = resp.Blob
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// Close cancels the call and closes the client, whose connection is the
// port-forward: the member's read transaction ends with it.
func (s *snapshotStream) Close() error {
	s.cancel()
	return s.cli.Close()
}

// client builds a client of the one member, dialled through m.Dial with TLS
// material held in memory only. It fails rather than retrying when the
// connection or the TLS handshake fails.
func (m *Members) client(ctx context.Context, namespace, pod string) (*clientv3.Client, error) {
	if m.Dial == nil || m.Kube == nil {
		return nil, errors.New("etcdclient.Members needs Kube and Dial")
	}
	tlsCfg, err := m.tlsConfig(ctx, namespace)
	if err != nil {
		return nil, err
	}
	port := m.port()
	member := namespace + "/" + pod
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		conn, err := m.Dial(ctx, namespace, pod, port)
		if err != nil {
			return nil, permanent{fmt.Errorf("connect to etcd member %s port %d: %w", member, port, err)}
		}
		return conn, nil
	}
	timeout := defaultDialTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
		if timeout <= 0 {
			return nil, fmt.Errorf("connect to etcd member %s: %w", member, context.DeadlineExceeded)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		// The address only names the member: the dialer ignores it.
		Endpoints:   []string{fmt.Sprintf("https://%s:%d", m.serverName(), port)},
		TLS:         tlsCfg,
		Context:     ctx,
		DialTimeout: timeout,
		Logger:      zap.NewNop(),
		// One attempt per call: the caller decides about retries.
		MaxUnaryRetries:    1,
		MaxCallRecvMsgSize: maxRecvMsg,
		DialOptions: []grpc.DialOption{
			grpc.WithContextDialer(dial),
			// Overrides the client's own credentials, to fail at once on
			// a bad certificate rather than retrying until the timeout.
			grpc.WithTransportCredentials(failFast{credentials.NewTLS(tlsCfg), m.tlsHint(namespace)}),
			grpc.WithBlock(),
			grpc.FailOnNonTempDialError(true),
			// Deprecated in gRPC, but the only way to have the cause
			// rather than "context deadline exceeded" from a blocking dial.
			grpc.WithReturnConnectionError(),
			grpc.WithInitialWindowSize(streamWindow),
			grpc.WithInitialConnWindowSize(connWindow),
		},
	})
	if err != nil {
		var p permanent
		if errors.As(err, &p) {
			return nil, p.error
		}
		return nil, fmt.Errorf("connect to etcd member %s: %s", member, oneLine(err.Error()))
	}
	return cli, nil
}

// tlsConfig reads the client certificate and CA from the namespace.
func (m *Members) tlsConfig(ctx context.Context, namespace string) (*tls.Config, error) {
	secretName, cmName := m.clientSecret(), m.caConfigMap()
	secret, err := m.Kube.CoreV1().Secrets(namespace).Get(ctx, secretName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read etcd client certificate from Secret %s/%s: %w", namespace, secretName, err)
	}
	var cert tls.Certificate
	found := false
	for _, pair := range clientKeyPairs {
		crt, okc := secret.Data[pair[0]]
		key, okk := secret.Data[pair[1]]
		if !okc || !okk {
			continue
		}
		if cert, err = tls.X509KeyPair(crt, key); err != nil {
			return nil, fmt.Errorf("Secret %s/%s keys %s and %s: %w", namespace, secretName, pair[0], pair[1], err)
		}
		found = true
		break
	}
	if !found {
		return nil, fmt.Errorf("Secret %s/%s holds no etcd client certificate: want keys %s and %s (or %s and %s)",
			namespace, secretName, clientKeyPairs[0][0], clientKeyPairs[0][1], clientKeyPairs[1][0], clientKeyPairs[1][1])
	}
	cm, err := m.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, cmName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read etcd CA from ConfigMap %s/%s: %w", namespace, cmName, err)
	}
	ca, ok := cm.Data[caKey]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s/%s has no key %s (the etcd CA bundle)", namespace, cmName, caKey)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ca)) {
		return nil, fmt.Errorf("ConfigMap %s/%s key %s holds no PEM certificate", namespace, cmName, caKey)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   m.serverName(),
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// tlsHint names what a failed handshake depends on.
func (m *Members) tlsHint(namespace string) string {
	return fmt.Sprintf("TLS with etcd (server name %q, CA from ConfigMap %s/%s key %s, client certificate from Secret %s/%s)",
		m.serverName(), namespace, m.caConfigMap(), caKey, namespace, m.clientSecret())
}

// wrap makes one line of an error of a call to the member.
func (m *Members) wrap(namespace, pod, what string, err error) error {
	var p permanent
	if errors.As(err, &p) {
		return p.error
	}
	return fmt.Errorf("etcd member %s/%s %s: %s", namespace, pod, what, oneLine(err.Error()))
}

func (m *Members) port() int {
	if m.Port != 0 {
		return m.Port
	}
	return DefaultPort
}

func (m *Members) serverName() string {
	if m.ServerName != "" {
		return m.ServerName
	}
	return DefaultServerName
}

func (m *Members) clientSecret() string {
	if m.ClientSecret != "" {
		return m.ClientSecret
	}
	return DefaultClientSecret
}

func (m *Members) caConfigMap() string {
	if m.CAConfigMap != "" {
		return m.CAConfigMap
	}
	return DefaultCAConfigMap
}

// permanent marks an error gRPC must not retry: a dial through the
// port-forward or a TLS handshake that failed will fail again the same way
// within the dial timeout, so the caller hears of it at once.
type permanent struct{ error }

// Temporary tells gRPC (grpc.FailOnNonTempDialError) to give up.
func (permanent) Temporary() bool { return false }

// Unwrap gives the cause.
func (p permanent) Unwrap() error { return p.error }

// failFast is TLS transport credentials whose handshake errors are
// permanent and say what the handshake depends on.
type failFast struct {
	credentials.TransportCredentials
	hint string
}

// ClientHandshake runs the TLS handshake.
func (f failFast) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := f.TransportCredentials.ClientHandshake(ctx, authority, conn)
	if err != nil && ctx.Err() == nil {
		return nil, nil, permanent{fmt.Errorf("%s: %s", f.hint, oneLine(err.Error()))}
	}
	return c, info, err
}

// Clone copies the credentials.
func (f failFast) Clone() credentials.TransportCredentials {
	return failFast{f.TransportCredentials.Clone(), f.hint}
}

// oneLine keeps an error on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
