package s3

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "defaults", cfg: Config{Bucket: "bucket"}},
		{name: "explicit tuning", cfg: Config{Bucket: "bucket", PartSize: MinPartSize, Concurrency: 1}},
		{name: "largest part", cfg: Config{Bucket: "bucket", PartSize: MaxPartSize}},
		{name: "CA bundle", cfg: Config{Bucket: "bucket", CABundle: "/ca.pem"}},
		{name: "no bucket", cfg: Config{}, wantErr: "bucket is empty"},
		{name: "bad bucket", cfg: Config{Bucket: "My_Bucket"}, wantErr: "lower-case"},
		{name: "part too small", cfg: Config{Bucket: "bucket", PartSize: MinPartSize - 1}, wantErr: "part size"},
		{name: "part too large", cfg: Config{Bucket: "bucket", PartSize: MaxPartSize + 1}, wantErr: "part size"},
		{name: "negative concurrency", cfg: Config{Bucket: "bucket", Concurrency: -1}, wantErr: "concurrency"},
		{name: "CA and insecure", cfg: Config{Bucket: "bucket", CABundle: "/ca.pem", InsecureSkipVerify: true}, wantErr: "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

func TestOpenCABundle(t *testing.T) {
	isolateAWSEnv(t, "https://127.0.0.1:1", "AKIDTEST", "secret")
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), Config{Bucket: "bucket", CABundle: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("Open with a bad CA bundle = %v", err)
	}
	if _, err := Open(context.Background(), Config{Bucket: "bucket", CABundle: filepath.Join(dir, "missing.pem")}); err == nil || !strings.Contains(err.Error(), "read S3 CA bundle") {
		t.Errorf("Open with a missing CA bundle = %v", err)
	}
}

func TestOpenNeedsRegion(t *testing.T) {
	isolateAWSEnv(t, "http://127.0.0.1:1", "AKIDTEST", "secret")
	t.Setenv("AWS_REGION", "")
	if _, err := Open(context.Background(), Config{Bucket: "bucket"}); err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("Open without a region = %v", err)
	}
	if _, err := Open(context.Background(), Config{Bucket: "bucket", Region: "eu-west-1"}); err != nil {
		t.Errorf("Open with Config.Region = %v", err)
	}
}

func TestPutHeadGetList(t *testing.T) {
	fake, srv := newFakeS3(t, "bucket")
	s := openFake(t, srv, "bucket", 5*mib, 1)
	ctx := context.Background()

	if _, ok, err := s.Head(ctx, "b/manifest.json"); err != nil || ok {
		t.Fatalf("Head of a missing key = %v, %v", ok, err)
	}
	err := s.Put(ctx, "b/manifest.json", []byte(`{"a":1}`), PutOptions{
		ContentType: "application/json",
		Metadata:    map[string]string{"run": "r1"},
		SSE:         SSEKMS,
		SSEKMSKeyID: "key-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := fake.object("b/manifest.json")
	for h, want := range map[string]string{
		"Content-Type":                                "application/json",
		"X-Amz-Server-Side-Encryption":                "aws:kms",
		"X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id": "key-1",
		"X-Amz-Meta-Run":                              "r1",
	} {
		if got := obj.headers.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	info, ok, err := s.Head(ctx, "b/manifest.json")
	if err != nil || !ok || info.Size != 7 || info.Metadata["run"] != "r1" {
		t.Errorf("Head = %+v, %v, %v", info, ok, err)
	}
	body, info, err := s.Get(ctx, "b/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(body)
	body.Close()
	if string(data) != `{"a":1}` || info.Size != 7 {
		t.Errorf("Get = %q, %+v", data, info)
	}
	if _, _, err := s.Get(ctx, "missing"); err == nil || !strings.Contains(err.Error(), "get s3://bucket/missing") {
		t.Errorf("Get of a missing key = %v", err)
	}

	for _, k := range []string{"b/1", "b/2", "b/3", "c/1"} {
		if err := s.Put(ctx, k, []byte(k), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := s.List(ctx, "b/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	if want := []string{"b/1", "b/2", "b/3", "b/manifest.json"}; !slices.Equal(keys, want) {
		t.Errorf("List over several pages = %v, want %v", keys, want)
	}
}

func TestPutRejectsBadSSE(t *testing.T) {
	fake, srv := newFakeS3(t, "bucket")
	s := openFake(t, srv, "bucket", 5*mib, 1)
	for _, opts := range []PutOptions{{SSE: "aws:kms:dsse"}, {SSE: SSES3, SSEKMSKeyID: "k"}, {SSEKMSKeyID: "k"}} {
		if err := s.Put(context.Background(), "k", nil, opts); err == nil {
			t.Errorf("Put with %+v succeeded", opts)
		}
	}
	if acts := fake.Actions(); len(acts) != 0 {
		t.Errorf("requests sent: %v", acts)
	}
}

func TestCheckWritable(t *testing.T) {
	fake, srv := newFakeS3(t, "bucket")
	s := openFake(t, srv, "bucket", 5*mib, 1)
	if err := s.CheckWritable(context.Background(), "/backups/"); err != nil {
		t.Fatal(err)
	}
	acts := fake.Actions()
	if len(acts) != 2 || !strings.HasPrefix(acts[0], "put backups/"+probePrefix) || acts[1] != "delete"+strings.TrimPrefix(acts[0], "put") {
		t.Errorf("actions = %v, want a put and a delete of one probe under backups/", acts)
	}

	missing := openFake(t, srv, "other-bucket", 5*mib, 1)
	err := missing.CheckWritable(context.Background(), "")
	if err == nil || err.Error() != `S3 bucket "other-bucket" does not exist: create it or correct the bucket name` {
		t.Errorf("CheckWritable of a missing bucket = %v", err)
	}
}

func TestPresign(t *testing.T) {
	_, srv := newFakeS3(t, "bucket")
	s := openFake(t, srv, "bucket", 5*mib, 1)
	for _, d := range []time.Duration{0, -time.Second, time.Millisecond, MaxPresignExpiry + time.Second} {
		if _, _, err := s.Presign(context.Background(), "k", d); err == nil || !strings.Contains(err.Error(), "between 1s and 7 days") {
			t.Errorf("Presign(%s) = %v", d, err)
		}
	}
	before := time.Now()
	raw, expiresAt, err := s.Presign(context.Background(), "dir/snap.db", 90*time.Minute+500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Path != "/bucket/dir/snap.db" || q.Get("X-Amz-Expires") != "5400" || q.Get("X-Amz-Signature") == "" {
		t.Errorf("presigned URL path %s, query keys %v", u.Path, slices.Sorted(func(yield func(string) bool) {
			for k := range q {
				if !yield(k) {
					return
				}
			}
		}))
	}
	// Anyone with the URL can use it: no header may be part of the signature.
	if got := q.Get("X-Amz-SignedHeaders"); got != "host" {
		t.Errorf("signed headers = %q, want host only", got)
	}
	if lo, hi := before.Add(90*time.Minute-time.Second), time.Now().Add(90*time.Minute); expiresAt.Before(lo) || expiresAt.After(hi) {
		t.Errorf("expiresAt = %s, want between %s and %s", expiresAt, lo, hi)
	}
	if _, _, err := s.Presign(context.Background(), "k", MaxPresignExpiry); err != nil {
		t.Errorf("Presign of 7 days = %v", err)
	}
}

func TestTLS(t *testing.T) {
	_, srv := newFakeS3TLS(t, "bucket")
	isolateAWSEnv(t, srv.URL, "AKIDTEST", "secret")
	t.Setenv("AWS_MAX_ATTEMPTS", "1")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"verified by default", Config{Bucket: "bucket"}, `the S3 endpoint's certificate for S3 bucket "bucket" is not trusted: use --s3-ca-bundle with the CA that signed it`},
		{"CA bundle", Config{Bucket: "bucket", CABundle: ca}, ""},
		{"explicitly insecure", Config{Bucket: "bucket", InsecureSkipVerify: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(context.Background(), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = s.CheckWritable(context.Background(), "p")
			if tt.wantErr == "" && err != nil {
				t.Fatalf("CheckWritable = %v", err)
			}
			if tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Fatalf("CheckWritable = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckWritableConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	isolateAWSEnv(t, "http://"+addr, "AKIDTEST", "secret")
	// One attempt: the SDK's retries of a refused connection only slow the test.
	t.Setenv("AWS_MAX_ATTEMPTS", "1")
	s, err := Open(context.Background(), Config{Bucket: "bucket"})
	if err != nil {
		t.Fatal(err)
	}
	err = s.CheckWritable(context.Background(), "")
	if want := `the S3 endpoint for S3 bucket "bucket" refused the connection: check AWS_ENDPOINT_URL_S3 and that the server runs`; err == nil || err.Error() != want {
		t.Fatalf("CheckWritable = %v, want %q", err, want)
	}
}
