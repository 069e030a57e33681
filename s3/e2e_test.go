//go:build e2e

package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// The MinIO server the e2e tests share; TestMain starts and stops it.
const (
	e2eBucket    = "hcpsnap-e2e"
	e2eAccessKey = "hcpsnap-e2e"
	e2eSecretKey = "hcpsnap-e2e-secret"
	e2eKMSKeyID  = "hcpsnap-key"
)

var e2eEndpoint string

func TestMain(m *testing.M) {
	code, err := runWithMinIO(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// runWithMinIO starts MinIO on free loopback ports with a temporary data
// folder, creates the test bucket, points the AWS configuration chain at it,
// runs the tests and kills MinIO again.
func runWithMinIO(m *testing.M) (int, error) {
	bin, err := minioBinary()
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "hcpsnap-s3-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	consolePort, err := freePort()
	if err != nil {
		return 0, err
	}
	var kmsKey [32]byte
	if _, err := rand.Read(kmsKey[:]); err != nil {
		return 0, err
	}
	logFile, err := os.Create(filepath.Join(dir, "minio.log"))
	if err != nil {
		return 0, err
	}
	defer logFile.Close()

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "server", "--quiet",
		"--address", addr, "--console-address", fmt.Sprintf("127.0.0.1:%d", consolePort),
		filepath.Join(dir, "data"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"MINIO_ROOT_USER=" + e2eAccessKey,
		"MINIO_ROOT_PASSWORD=" + e2eSecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CALLHOME_ENABLE=off",
		"MINIO_KMS_SECRET_KEY=" + e2eKMSKeyID + ":" + base64.StdEncoding.EncodeToString(kmsKey[:]),
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", bin, err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	e2eEndpoint = "http://" + addr
	if err := waitLive(e2eEndpoint+"/minio/health/live", 60*time.Second); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		return 0, fmt.Errorf("%w; MinIO's log:\n%s", err, log)
	}

	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           e2eAccessKey,
		"AWS_SECRET_ACCESS_KEY":       e2eSecretKey,
		"AWS_REGION":                  "us-east-1",
		"AWS_ENDPOINT_URL_S3":         e2eEndpoint,
		"AWS_CONFIG_FILE":             filepath.Join(dir, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "aws-credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
	} {
		os.Setenv(k, v)
	}
	for _, k := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_DEFAULT_REGION"} {
		os.Unsetenv(k)
	}
	s, err := Open(context.Background(), Config{Bucket: e2eBucket})
	if err != nil {
		return 0, err
	}
	if _, err := s.client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(e2eBucket)}); err != nil {
		return 0, fmt.Errorf("create bucket: %w", err)
	}
	return m.Run(), nil
}

// minioBinary finds MinIO in $LOCALENV_BIN_DIR (relative to the repository
// root when relative), else in the repository's .cache/bin.
func minioBinary() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := os.Getenv("LOCALENV_BIN_DIR")
	switch {
	case dir == "":
		dir = filepath.Join(root, ".cache", "bin")
	case !filepath.IsAbs(dir):
		dir = filepath.Join(root, dir)
	}
	bin := filepath.Join(dir, "minio")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("MinIO is missing (%w): run 'make deps' to build it", err)
	}
	return bin, nil
}

// repoRoot is the nearest folder above the working directory with a go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitLive(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("MinIO not live at %s after %s", url, timeout)
}

// openE2E opens the test bucket with 5 MiB parts.
func openE2E(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.Bucket == "" {
		cfg.Bucket = e2eBucket
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = MinPartSize
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pendingUploads lists the unfinished multipart uploads of key.
func pendingUploads(t *testing.T, s *Store, key string) []string {
	t.Helper()
	out, err := s.client.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range out.Uploads {
		if aws.ToString(u.Key) == key {
			ids = append(ids, aws.ToString(u.UploadId))
		}
	}
	return ids
}

func TestE2EUploadRoundTrip(t *testing.T) {
	s := openE2E(t, Config{Concurrency: 3})
	ctx := context.Background()
	const key = "backups/c1/20260101T000000Z/snapshot.db"
	size := int64(3*MinPartSize + MinPartSize/2)
	r, want := stream(7, size)

	var uploadID string
	var last int64
	res, err := s.Upload(ctx, key, r, UploadOptions{
		Metadata: map[string]string{"hcpsnap-sha256": want, "hcpsnap-cluster": "c1"},
		OnCreate: func(id string) {
			uploadID = id
			// The upload exists before any data moves, so a crash now
			// leaves something AbortUploads can find.
			if ids := pendingUploads(t, s, key); !slices.Contains(ids, id) {
				t.Errorf("upload %s not listed in OnCreate: %v", id, ids)
			}
		},
		OnPart: func(done int64) { last = done },
	})
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if res.Size != size || res.ETag == "" || last != size || uploadID == "" {
		t.Errorf("result %+v, last progress %d, upload ID %q; want %d bytes", res, last, uploadID, size)
	}
	if ids := pendingUploads(t, s, key); len(ids) != 0 {
		t.Errorf("unfinished uploads after success: %v", ids)
	}

	info, ok, err := s.Head(ctx, key)
	if err != nil || !ok || info.Size != size || info.Metadata["hcpsnap-sha256"] != want || info.Metadata["hcpsnap-cluster"] != "c1" {
		t.Errorf("Head = %+v, %v, %v", info, ok, err)
	}
	// The server kept the parts' CRC32C checksums: the object's checksum
	// is the composite of four parts.
	head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(e2eBucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(head.ChecksumCRC32C); !strings.HasSuffix(got, "-4") {
		t.Errorf("object checksum = %q, want a composite CRC32C of 4 parts", got)
	}

	body, info, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	h := sha256.New()
	if n, err := io.Copy(h, body); err != nil || n != size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want || info.Size != size {
		t.Errorf("downloaded SHA-256 %s size %d, want %s %d", got, info.Size, want, size)
	}
}

func TestE2EUploadEmptyStream(t *testing.T) {
	s := openE2E(t, Config{})
	res, err := s.Upload(context.Background(), "empty/snapshot.db", bytes.NewReader(nil), UploadOptions{})
	if err != nil {
		t.Fatalf("Upload of an empty stream: %v", err)
	}
	if res.Size != 0 {
		t.Errorf("result = %+v", res)
	}
	if info, ok, err := s.Head(context.Background(), "empty/snapshot.db"); err != nil || !ok || info.Size != 0 {
		t.Errorf("Head = %+v, %v, %v", info, ok, err)
	}
}

func TestE2EUploadFailureLeavesNothing(t *testing.T) {
	errExec := errors.New("etcdctl exited with status 1")
	tests := []struct {
		name   string
		reader func() io.Reader
		cancel bool
		want   error
	}{
		{"reader fails mid-stream", func() io.Reader {
			r, _ := stream(8, 7*MinPartSize/2)
			return io.MultiReader(r, iotest.ErrReader(errExec))
		}, false, errExec},
		{"context cancelled", func() io.Reader {
			r, _ := stream(9, 20*MinPartSize)
			return r
		}, true, context.Canceled},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openE2E(t, Config{Concurrency: 2})
			key := fmt.Sprintf("failed/%d/snapshot.db", i)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var uploadID string
			_, err := s.Upload(ctx, key, tt.reader(), UploadOptions{
				OnCreate: func(id string) { uploadID = id },
				OnPart: func(int64) {
					if tt.cancel {
						cancel()
					}
				},
			})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Upload error = %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), "abort") {
				t.Errorf("the abort failed: %v", err)
			}
			if uploadID == "" {
				t.Error("OnCreate was not called")
			}
			if _, ok, err := s.Head(context.Background(), key); err != nil || ok {
				t.Errorf("Head after a failed upload = %v, %v; want no object", ok, err)
			}
			if ids := pendingUploads(t, s, key); len(ids) != 0 {
				t.Errorf("unfinished uploads left: %v", ids)
			}
		})
	}
}

func TestE2ECheckWritable(t *testing.T) {
	s := openE2E(t, Config{})
	if err := s.CheckWritable(context.Background(), "probe/"); err != nil {
		t.Fatal(err)
	}
	objs, err := s.List(context.Background(), "probe/")
	if err != nil || len(objs) != 0 {
		t.Errorf("objects left by CheckWritable: %v, %v", objs, err)
	}
}

func TestE2EExplain(t *testing.T) {
	t.Run("wrong secret key", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
		err := openE2E(t, Config{}).CheckWritable(context.Background(), "")
		if err == nil || !strings.HasPrefix(err.Error(), `bad credentials for S3 bucket "hcpsnap-e2e" (SignatureDoesNotMatch)`) {
			t.Fatalf("CheckWritable = %v", err)
		}
		if strings.Contains(err.Error(), "not-the-secret") {
			t.Error("the error shows the secret key")
		}
	})
	t.Run("unknown access key", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "nobody")
		err := openE2E(t, Config{}).CheckWritable(context.Background(), "")
		if err == nil || !strings.HasPrefix(err.Error(), `bad credentials for S3 bucket "hcpsnap-e2e" (InvalidAccessKeyId)`) {
			t.Fatalf("CheckWritable = %v", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		err := openE2E(t, Config{Bucket: "no-such-bucket"}).CheckWritable(context.Background(), "")
		if want := `S3 bucket "no-such-bucket" does not exist: create it or correct the bucket name`; err == nil || err.Error() != want {
			t.Fatalf("CheckWritable = %v, want %q", err, want)
		}
	})
}

func TestE2EPutSSE(t *testing.T) {
	s := openE2E(t, Config{})
	ctx := context.Background()
	tests := []struct {
		opts PutOptions
		want types.ServerSideEncryption
	}{
		{PutOptions{ContentType: "application/json", SSE: SSES3}, types.ServerSideEncryptionAes256},
		{PutOptions{ContentType: "application/json", SSE: SSEKMS, SSEKMSKeyID: e2eKMSKeyID, Metadata: map[string]string{"kind": "key-bundle"}}, types.ServerSideEncryptionAwsKms},
	}
	for _, tt := range tests {
		t.Run(tt.opts.SSE, func(t *testing.T) {
			key := "keys/" + tt.opts.SSE + "/key-bundle.json"
			data := []byte(`{"secret":"` + tt.opts.SSE + `"}`)
			if err := s.Put(ctx, key, data, tt.opts); err != nil {
				t.Fatal(err)
			}
			head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(e2eBucket), Key: aws.String(key)})
			if err != nil {
				t.Fatal(err)
			}
			if head.ServerSideEncryption != tt.want || aws.ToString(head.ContentType) != "application/json" {
				t.Errorf("stored with SSE %q, content type %q", head.ServerSideEncryption, aws.ToString(head.ContentType))
			}
			if tt.opts.SSEKMSKeyID != "" && !strings.HasSuffix(aws.ToString(head.SSEKMSKeyId), tt.opts.SSEKMSKeyID) {
				t.Errorf("KMS key ID = %q", aws.ToString(head.SSEKMSKeyId))
			}
			body, info, err := s.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(body)
			body.Close()
			if !bytes.Equal(got, data) || info.Metadata["kind"] != tt.opts.Metadata["kind"] {
				t.Errorf("Get = %q, %v", got, info.Metadata)
			}
		})
	}
}

func TestE2EPresign(t *testing.T) {
	s := openE2E(t, Config{})
	ctx := context.Background()
	data := []byte("restore me")
	if err := s.Put(ctx, "presign/snapshot.db", data, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func(url string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(url) // no credentials: the URL is the credential
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}

	url, expiresAt, err := s.Presign(ctx, "presign/snapshot.db", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if until := time.Until(expiresAt); until < 9*time.Minute || until > 10*time.Minute {
		t.Errorf("expires in %s", until)
	}
	if code, body := get(url); code != http.StatusOK || !bytes.Equal(body, data) {
		t.Errorf("GET = %d %q", code, body)
	}

	url, _, err = s.Presign(ctx, "presign/snapshot.db", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if code, body := get(url); code != http.StatusForbidden {
		t.Errorf("GET of an expired URL = %d %q, want 403", code, body)
	}
}

func TestE2EAbortUploads(t *testing.T) {
	s := openE2E(t, Config{})
	ctx := context.Background()
	const key = "dangling/snapshot.db"
	create := func(key string) {
		t.Helper()
		out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(e2eBucket), Key: aws.String(key), ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
		if err != nil {
			t.Fatal(err)
		}
		part := []byte("part of a crashed run")
		sum := sha256.Sum256(part)
		if _, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(e2eBucket), Key: aws.String(key), UploadId: out.UploadId, PartNumber: aws.Int32(1),
			Body: bytes.NewReader(part), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		}); err != nil {
			t.Fatal(err)
		}
	}
	create(key)
	create(key)
	create(key + ".other")
	if ids := pendingUploads(t, s, key); len(ids) != 2 {
		t.Fatalf("pending uploads before = %v", ids)
	}
	if err := s.AbortUploads(ctx, key); err != nil {
		t.Fatal(err)
	}
	if ids := pendingUploads(t, s, key); len(ids) != 0 {
		t.Errorf("pending uploads after = %v", ids)
	}
	if ids := pendingUploads(t, s, key+".other"); len(ids) != 1 {
		t.Errorf("the other key's uploads = %v, want it left alone", ids)
	}
	if err := s.AbortUploads(ctx, "nothing/here"); err != nil {
		t.Errorf("AbortUploads without uploads = %v", err)
	}
}

func TestE2EList(t *testing.T) {
	s := openE2E(t, Config{})
	ctx := context.Background()
	want := []string{"list/a", "list/b/c", "list/d"}
	for _, k := range append(slices.Clone(want), "listing-not/x") {
		if err := s.Put(ctx, k, []byte(k), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := s.List(ctx, "list/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
		if o.Size != int64(len(o.Key)) {
			t.Errorf("%s has size %d", o.Key, o.Size)
		}
	}
	if !slices.Equal(keys, want) {
		t.Errorf("List = %v, want %v", keys, want)
	}
}

func TestE2EGetRange(t *testing.T) {
	s := openE2E(t, Config{})
	ctx := context.Background()
	data := make([]byte, 10000)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "range/object", data, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRange(ctx, "range/object", 4096, 4096)
	if err != nil || !bytes.Equal(got, data[4096:8192]) {
		t.Errorf("GetRange(4096, 4096) = %d bytes, %v; want the object's bytes 4096-8191", len(got), err)
	}
	if got, err := s.GetRange(ctx, "range/object", 8192, 4096); err == nil {
		t.Errorf("GetRange past the end = %d bytes, want an error", len(got))
	}
}
