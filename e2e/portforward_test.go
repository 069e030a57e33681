//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/internal/etcdclient"
	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// TestPortForwardReachesEtcdMember speaks to each etcd member's own
// localhost:2379 through pods/portforward, on both protocols: Status agrees
// with etcdctl run in the pod (an independent client), and a snapshot read
// with a pause longer than every ping period of the path (SPDY 5 s at the
// apiserver, 10 s in the WebSocket tunnel) still ends whole, as an upload
// slower than etcd would read it.
func TestPortForwardReachesEtcdMember(t *testing.T) {
	env := loadEnv(t)
	for _, protocol := range []string{"websocket", "spdy"} {
		t.Run(protocol, func(t *testing.T) {
			pf := &kube.PortForwarder{Config: env.restConfig, Client: env.kube, Protocol: protocol}
			members := &etcdclient.Members{Kube: env.kube, Dial: pf.Dial}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			for _, pod := range []string{"etcd-0", "etcd-1", "etcd-2"} {
				size, version, err := members.Status(ctx, env.hcpNamespace, pod)
				if err != nil {
					t.Fatalf("status of %s: %v", pod, err)
				}
				out, stderr, err := env.exec(ctx, pod, append(runbookEtcdctl, "endpoint", "status", "-w", "json")...)
				if err != nil {
					t.Fatalf("endpoint status in %s: %v (%s)", pod, err, stderr)
				}
				var st []struct {
					Status struct {
						Version string `json:"version"`
						DbSize  int64  `json:"dbSize"`
					} `json:"Status"`
				}
				if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
					t.Fatalf("endpoint status in %s: %v: %q", pod, err, out)
				}
				if version != st[0].Status.Version || size != st[0].Status.DbSize {
					t.Errorf("%s through port-forward: version %s, db size %d; etcdctl in the pod: %s, %d",
						pod, version, size, st[0].Status.Version, st[0].Status.DbSize)
				}
			}

			start := time.Now()
			rc, err := members.Snapshot(ctx, env.hcpNamespace, "etcd-0")
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			sum := &tailHash{h: sha256.New()}
			if _, err := io.CopyN(sum, rc, 64<<10); err != nil {
				t.Fatal(err)
			}
			time.Sleep(12 * time.Second)
			resumed := time.Now()
			n, err := io.Copy(sum, rc)
			if err != nil {
				t.Fatalf("after a 12 s pause, the stream failed at %d bytes: %v", n+64<<10, err)
			}
			if !sum.ok() {
				t.Fatalf("snapshot of %d bytes: the last 32 bytes are not the SHA-256 of the rest", sum.n)
			}
			// A figure for the record, not an assertion: timings do not
			// belong in tests (make bench measures).
			t.Logf("%s: %d bytes, %.1f MiB/s after the pause (%s in all)", protocol, sum.n,
				float64(n)/(1<<20)/time.Since(resumed).Seconds(), time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestPortForwardRefusedPort forwards to a port nothing listens on: the
// kubelet's message on the error stream comes back from Read, not an EOF.
func TestPortForwardRefusedPort(t *testing.T) {
	env := loadEnv(t)
	for _, protocol := range []string{"websocket", "spdy"} {
		t.Run(protocol, func(t *testing.T) {
			pf := &kube.PortForwarder{Config: env.restConfig, Client: env.kube, Protocol: protocol}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// The kubelet may refuse when the streams open (Dial) or on the
			// error stream (Read); either way an error, not an EOF.
			conn, err := pf.Dial(ctx, env.hcpNamespace, "etcd-0", 2399)
			if err == nil {
				defer conn.Close()
				_, err = conn.Read(make([]byte, 1))
			}
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("read from a closed port: err=%v, want the kubelet's error", err)
			}
			if !strings.Contains(err.Error(), "etcd-0:2399") || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line naming the pod and port", err)
			}
			t.Log(err)
		})
	}
}

// tailHash hashes all but the last 32 bytes written and keeps those apart,
// to check an etcd snapshot without holding it.
type tailHash struct {
	h    hash.Hash
	tail []byte
	n    int64
}

func (t *tailHash) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	t.tail = append(t.tail, p...)
	if over := len(t.tail) - sha256.Size; over > 0 {
		t.h.Write(t.tail[:over])
		t.tail = append(t.tail[:0], t.tail[over:]...)
	}
	return len(p), nil
}

func (t *tailHash) ok() bool {
	return len(t.tail) == sha256.Size && bytes.Equal(t.h.Sum(nil), t.tail)
}
