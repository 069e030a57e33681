package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/s3"
)

// listStore is a bucket of small objects; a key in failing fails to read.
type listStore struct {
	objects map[string]string
	failing map[string]error
}

func (s *listStore) Head(context.Context, string) (s3.ObjectInfo, bool, error) {
	return s3.ObjectInfo{}, false, nil
}

func (s *listStore) Get(_ context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error) {
	if err := s.failing[key]; err != nil {
		return nil, s3.ObjectInfo{}, err
	}
	return io.NopCloser(bytes.NewReader([]byte(s.objects[key]))), s3.ObjectInfo{Key: key}, nil
}

func (s *listStore) List(_ context.Context, prefix string) ([]s3.ObjectInfo, error) {
	var out []s3.ObjectInfo
	for k := range s.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s3.ObjectInfo{Key: k})
		}
	}
	for k := range s.failing {
		out = append(out, s3.ObjectInfo{Key: k})
	}
	return out, nil
}

func (s *listStore) Presign(context.Context, string, time.Duration) (string, time.Time, error) {
	return "", time.Time{}, nil
}

func manifestJSON(finished string) string {
	return `{"schemaVersion":1,"runID":"r","snapshot":{"key":"k"},"times":{"finished":"` + finished + `"}}`
}

// TestListSkipsUnreadableManifests: a damaged, foreign, newer or
// unreadable manifest is skipped and named; the others are listed, newest
// first.
func TestListSkipsUnreadableManifests(t *testing.T) {
	p := "backups/example/"
	store := &listStore{
		objects: map[string]string{
			p + "20260101T000000Z/manifest.json": manifestJSON("2026-01-01T00:00:00Z"),
			p + "20260301T000000Z/manifest.json": manifestJSON("2026-03-01T00:00:00Z"),
			p + "20260201T000000Z/manifest.json": `{"schemaVersion":1,"snap`, // truncated
			p + "20260401T000000Z/manifest.json": `{"schemaVersion":99,"snapshot":{"key":"k"}}`,
			p + "20260301T000000Z/snapshot.db":   "not a manifest, not read",
		},
		failing: map[string]error{p + "20260501T000000Z/manifest.json": errors.New("AccessDenied")},
	}
	backups, skipped, err := List(context.Background(), store, "backups", "example")
	if err != nil {
		t.Fatal(err)
	}
	if len(backups) != 2 || !strings.Contains(backups[0].ManifestKey, "20260301") || !strings.Contains(backups[1].ManifestKey, "20260101") {
		t.Fatalf("backups %v, want the two readable ones, newest first", backups)
	}
	var names []string
	for _, u := range skipped {
		names = append(names, u.Key+": "+u.Err.Error())
	}
	got := strings.Join(names, "\n")
	for _, want := range []string{"20260201T000000Z/manifest.json: backup manifest", "20260401T000000Z/manifest.json: backup manifest", "newer", "20260501T000000Z/manifest.json: backup manifest", "AccessDenied"} {
		if !strings.Contains(got, want) {
			t.Errorf("skipped manifests %q lack %q", got, want)
		}
	}
	if len(skipped) != 3 {
		t.Errorf("%d skipped, want 3", len(skipped))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := List(ctx, store, "backups", "example"); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled listing returned %v, want context.Canceled", err)
	}
}

// TestNamespaces: the namespaces of listed backups, once each, sorted.
func TestNamespaces(t *testing.T) {
	b := func(ns string) *Backup { return &Backup{Manifest: &manifest.Manifest{Namespace: ns, Cluster: "x"}} }
	if got := Namespaces([]*Backup{b("b"), b("a"), b("b")}); strings.Join(got, ",") != "a,b" {
		t.Fatalf("Namespaces = %v, want [a b]", got)
	}
	if got := Namespaces([]*Backup{b("clusters"), b("clusters")}); len(got) != 1 {
		t.Fatalf("Namespaces = %v, want one", got)
	}
}
