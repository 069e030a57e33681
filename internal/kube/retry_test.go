package kube

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestDialRetryWaitsForTheServer starts the server only after the first
// requests were refused: the POST must arrive once, with its body intact.
func TestDialRetryWaitsForTheServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // refused until the server starts below
	got := make(chan string, 2)
	go func() {
		time.Sleep(700 * time.Millisecond)
		l2, err := net.Listen("tcp", addr)
		if err != nil {
			got <- "listen: " + err.Error()
			return
		}
		_ = http.Serve(l2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got <- string(b)
		}))
	}()
	rt := dialRetry{next: http.DefaultTransport, window: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/x", bytes.NewReader([]byte("payload")))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	resp.Body.Close()
	if b := <-got; b != "payload" {
		t.Fatalf("server got %q, want the body", b)
	}
}

func TestDialRetryGivesUpAndHonoursTheContext(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	rt := dialRetry{next: http.DefaultTransport, window: 300 * time.Millisecond}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	start := time.Now()
	if _, err := rt.RoundTrip(req); err == nil {
		t.Fatal("a server that never comes got an answer")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("gave up far after the window")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	rt.window = time.Hour
	if _, err := rt.RoundTrip(req); err == nil {
		t.Fatal("a cancelled request was retried forever or succeeded")
	}
}

func TestTransient(t *testing.T) {
	gr := schema.GroupResource{Resource: "deployments"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"service unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "get", 1), true},
		{"not found is an answer", apierrors.NewNotFound(gr, "x"), false},
		{"forbidden is an answer", apierrors.NewForbidden(gr, "x", errors.New("no")), false},
		{"conflict is an answer", apierrors.NewConflict(gr, "x", errors.New("changed")), false},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Transient(tt.err); got != tt.want {
				t.Fatalf("Transient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
