package dryrun

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	appsv1 "k8s.io/api/apps/v1"
)

func TestReadOnlyRefusesWritesBeforeTheServer(t *testing.T) {
	var writes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			writes.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"kube-apiserver","namespace":"ns"}}`))
	}))
	defer srv.Close()
	client := kubernetes.NewForConfigOrDie(ReadOnly(&rest.Config{Host: srv.URL}))
	ctx := context.Background()
	if _, err := client.AppsV1().Deployments("ns").Get(ctx, "kube-apiserver", metav1.GetOptions{}); err != nil {
		t.Fatalf("read refused: %v", err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"update", func() error {
			_, err := client.AppsV1().Deployments("ns").Update(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.UpdateOptions{})
			return err
		}},
		{"delete", func() error { return client.AppsV1().Deployments("ns").Delete(ctx, "x", metav1.DeleteOptions{}) }},
		{"patch", func() error {
			_, err := client.AppsV1().Deployments("ns").Patch(ctx, "x", "application/merge-patch+json", []byte(`{}`), metav1.PatchOptions{})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var w *ErrWrite
			if !errors.As(err, &w) {
				t.Fatalf("error %v, want *ErrWrite", err)
			}
		})
	}
	if n := writes.Load(); n != 0 {
		t.Fatalf("%d writes reached the server", n)
	}
}
