package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeS3 is a small in-process fake of the S3 HTTP API: enough of
// multipart uploads, PutObject, HeadObject, DeleteObject and
// ListMultipartUploads to test the store's logic without a server. It checks
// every part's SHA-256 as S3 does, records the order of requests, and lets a
// test fail or delay chosen requests. It serves one bucket, path style, which
// is also what the SDK chooses for an endpoint that is an IP address.
type fakeS3 struct {
	bucket string

	mu       sync.Mutex
	nextID   int
	uploads  map[string]*fakeUpload // by upload ID
	objects  map[string]fakeObject
	actions  []string
	inflight int
	maxIn    int

	// partHook, when set, runs before a part is stored; a non-empty code
	// fails the part with that S3 error code and HTTP status 400.
	partHook func(number int) (code string)
	// abortCode, when set, fails AbortMultipartUpload with that code (403).
	abortCode string
	// deleteCode, when set, fails DeleteObject with that code (403).
	deleteCode string
	// discard keeps only the checksums of parts, so that a test can count
	// the client's allocations without the server's.
	discard bool
}

type fakeUpload struct {
	key      string
	metadata map[string]string
	parts    map[int][]byte
	sums     map[int]string
}

type fakeObject struct {
	data     []byte
	metadata map[string]string
	headers  http.Header
}

func newFakeS3(t *testing.T, bucket string) (*fakeS3, *httptest.Server) {
	t.Helper()
	f := &fakeS3{bucket: bucket, uploads: map[string]*fakeUpload{}, objects: map[string]fakeObject{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

// newFakeS3TLS is newFakeS3 behind TLS with httptest's self-signed
// certificate for 127.0.0.1.
func newFakeS3TLS(t *testing.T, bucket string) (*fakeS3, *httptest.Server) {
	t.Helper()
	f := &fakeS3{bucket: bucket, uploads: map[string]*fakeUpload{}, objects: map[string]fakeObject{}}
	srv := httptest.NewUnstartedServer(f)
	// Rejected handshakes are what the tests provoke; keep them quiet.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeS3) record(action string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, action)
}

// Actions returns the recorded requests, e.g. "create", "part 1", "complete".
func (f *fakeS3) Actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.actions)
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<Error><Code>%s</Code><Message>fake %s</Message></Error>", code, code)
}

func metadataOf(h http.Header) map[string]string {
	m := map[string]string{}
	for k, v := range h {
		if name, ok := strings.CutPrefix(strings.ToLower(k), "x-amz-meta-"); ok {
			m[name] = v[0]
		}
	}
	return m
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if bucket != f.bucket {
		s3Error(w, http.StatusNotFound, "NoSuchBucket")
		return
	}
	q := r.URL.Query()
	_, uploads := q["uploads"]
	uploadID := q.Get("uploadId")
	switch {
	case r.Method == http.MethodPost && uploads:
		f.create(w, r, key)
	case r.Method == http.MethodPut && uploadID != "":
		f.part(w, r, uploadID, q.Get("partNumber"))
	case r.Method == http.MethodPost && uploadID != "":
		f.complete(w, r, key, uploadID)
	case r.Method == http.MethodDelete && uploadID != "":
		f.abort(w, uploadID)
	case r.Method == http.MethodGet && uploads && key == "":
		f.list(w, q.Get("prefix"))
	case r.Method == http.MethodGet && q.Get("list-type") == "2" && key == "":
		f.listObjects(w, q.Get("prefix"), q.Get("continuation-token"))
	case r.Method == http.MethodPut:
		f.put(w, r, key)
	case r.Method == http.MethodHead || r.Method == http.MethodGet:
		f.get(w, r, key)
	case r.Method == http.MethodDelete && f.deleteCode != "":
		f.record("refuse delete " + key)
		s3Error(w, http.StatusForbidden, f.deleteCode)
	case r.Method == http.MethodDelete:
		f.record("delete " + key)
		f.mu.Lock()
		delete(f.objects, key)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		s3Error(w, http.StatusNotImplemented, "NotImplemented")
	}
}

func (f *fakeS3) create(w http.ResponseWriter, r *http.Request, key string) {
	if got := r.Header.Get("x-amz-checksum-algorithm"); got != "CRC32C" {
		s3Error(w, http.StatusBadRequest, "InvalidRequest")
		return
	}
	f.mu.Lock()
	f.nextID++
	id := fmt.Sprintf("upload-%d", f.nextID)
	f.uploads[id] = &fakeUpload{key: key, metadata: metadataOf(r.Header), parts: map[int][]byte{}, sums: map[int]string{}}
	f.actions = append(f.actions, "create")
	f.mu.Unlock()
	fmt.Fprintf(w, "<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>", f.bucket, key, id)
}

func (f *fakeS3) part(w http.ResponseWriter, r *http.Request, uploadID, number string) {
	n, _ := strconv.Atoi(number)
	f.mu.Lock()
	f.inflight++
	f.maxIn = max(f.maxIn, f.inflight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	var buf bytes.Buffer
	var sink io.Writer = io.MultiWriter(h, &buf)
	if f.discard {
		sink = h
	}
	if _, err := io.Copy(sink, r.Body); err != nil {
		s3Error(w, http.StatusBadRequest, "IncompleteBody")
		return
	}
	data := buf.Bytes()
	if f.partHook != nil {
		if code := f.partHook(n); code != "" {
			f.record("fail part " + number)
			s3Error(w, http.StatusBadRequest, code)
			return
		}
	}
	// Parts are signed UNSIGNED-PAYLOAD, even over plain HTTP.
	if got := r.Header.Get("X-Amz-Content-Sha256"); got != "UNSIGNED-PAYLOAD" {
		s3Error(w, http.StatusBadRequest, "XAmzContentSHA256Mismatch")
		return
	}
	want := base64.StdEncoding.EncodeToString(h.Sum(nil))
	if r.Header.Get("x-amz-checksum-crc32c") != want {
		s3Error(w, http.StatusBadRequest, "BadDigest")
		return
	}
	f.mu.Lock()
	u, ok := f.uploads[uploadID]
	if ok {
		u.parts[n] = data
		u.sums[n] = want
		f.actions = append(f.actions, "part "+number)
	}
	f.mu.Unlock()
	if !ok {
		s3Error(w, http.StatusNotFound, "NoSuchUpload")
		return
	}
	w.Header().Set("ETag", fmt.Sprintf("\"etag-%d\"", n))
	w.Header().Set("x-amz-checksum-crc32c", want)
}

type completeRequest struct {
	Parts []struct {
		PartNumber     int
		ETag           string
		ChecksumCRC32C string
	} `xml:"Part"`
}

func (f *fakeS3) complete(w http.ResponseWriter, r *http.Request, key, uploadID string) {
	var req completeRequest
	if err := xml.NewDecoder(r.Body).Decode(&req); err != nil {
		s3Error(w, http.StatusBadRequest, "MalformedXML")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.uploads[uploadID]
	if !ok {
		s3Error(w, http.StatusNotFound, "NoSuchUpload")
		return
	}
	if len(req.Parts) == 0 {
		s3Error(w, http.StatusBadRequest, "MalformedXML")
		return
	}
	var data []byte
	for i, p := range req.Parts {
		part, ok := u.parts[p.PartNumber]
		if !ok || p.PartNumber != i+1 || p.ChecksumCRC32C != u.sums[p.PartNumber] {
			s3Error(w, http.StatusBadRequest, "InvalidPart")
			return
		}
		data = append(data, part...)
	}
	delete(f.uploads, uploadID)
	f.objects[key] = fakeObject{data: data, metadata: u.metadata}
	f.actions = append(f.actions, "complete")
	fmt.Fprintf(w, "<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><ETag>\"whole-%d\"</ETag></CompleteMultipartUploadResult>", f.bucket, key, len(req.Parts))
}

func (f *fakeS3) abort(w http.ResponseWriter, uploadID string) {
	f.record("abort " + uploadID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.abortCode != "" {
		s3Error(w, http.StatusForbidden, f.abortCode)
		return
	}
	if _, ok := f.uploads[uploadID]; !ok {
		s3Error(w, http.StatusNotFound, "NoSuchUpload")
		return
	}
	delete(f.uploads, uploadID)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeS3) list(w http.ResponseWriter, prefix string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "<ListMultipartUploadsResult><Bucket>%s</Bucket><IsTruncated>false</IsTruncated>", f.bucket)
	ids := make([]string, 0, len(f.uploads))
	for id := range f.uploads {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if u := f.uploads[id]; strings.HasPrefix(u.key, prefix) {
			fmt.Fprintf(&b, "<Upload><Key>%s</Key><UploadId>%s</UploadId></Upload>", u.key, id)
		}
	}
	b.WriteString("</ListMultipartUploadsResult>")
	io.WriteString(w, b.String())
}

// listPage is how many keys a fake listing returns at most, small so that
// tests exercise pagination.
const listPage = 2

func (f *fakeS3) listObjects(w http.ResponseWriter, prefix, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.objects {
		if strings.HasPrefix(k, prefix) && k > token {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	truncated := len(keys) > listPage
	if truncated {
		keys = keys[:listPage]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<ListBucketResult><Name>%s</Name><Prefix>%s</Prefix><KeyCount>%d</KeyCount><IsTruncated>%t</IsTruncated>", f.bucket, prefix, len(keys), truncated)
	if truncated {
		fmt.Fprintf(&b, "<NextContinuationToken>%s</NextContinuationToken>", keys[len(keys)-1])
	}
	for _, k := range keys {
		fmt.Fprintf(&b, "<Contents><Key>%s</Key><Size>%d</Size></Contents>", k, len(f.objects[k].data))
	}
	b.WriteString("</ListBucketResult>")
	io.WriteString(w, b.String())
}

func (f *fakeS3) put(w http.ResponseWriter, r *http.Request, key string) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		s3Error(w, http.StatusBadRequest, "IncompleteBody")
		return
	}
	sum := sha256.Sum256(data)
	if r.Header.Get("x-amz-checksum-sha256") != base64.StdEncoding.EncodeToString(sum[:]) {
		s3Error(w, http.StatusBadRequest, "BadDigest")
		return
	}
	f.record("put " + key)
	f.mu.Lock()
	f.objects[key] = fakeObject{data: data, metadata: metadataOf(r.Header), headers: r.Header.Clone()}
	f.mu.Unlock()
	w.Header().Set("ETag", "\"put\"")
}

func (f *fakeS3) get(w http.ResponseWriter, r *http.Request, key string) {
	f.mu.Lock()
	o, ok := f.objects[key]
	f.mu.Unlock()
	if !ok {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		s3Error(w, http.StatusNotFound, "NoSuchKey")
		return
	}
	for k, v := range o.metadata {
		w.Header().Set("x-amz-meta-"+k, v)
	}
	// The object lock a PutObject asked for is reported by HEAD, as S3 does.
	for _, h := range []string{"x-amz-object-lock-retain-until-date", "x-amz-object-lock-mode", "x-amz-object-lock-legal-hold"} {
		if v := o.headers.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(o.data)))
	if r.Method == http.MethodGet {
		io.Copy(w, bytes.NewReader(o.data))
	}
}

// object returns a stored object.
func (f *fakeS3) object(key string) (fakeObject, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objects[key]
	return o, ok
}

// pending returns the IDs of unfinished uploads.
func (f *fakeS3) pending() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.uploads {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// maxInflight returns the most parts the fake received at once.
func (f *fakeS3) maxInflight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxIn
}

// isolateAWSEnv points the AWS configuration chain at static test
// credentials and endpoint, away from any profile of the machine.
func isolateAWSEnv(t *testing.T, endpoint, accessKey, secretKey string) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           accessKey,
		"AWS_SECRET_ACCESS_KEY":       secretKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  "us-east-1",
		"AWS_DEFAULT_REGION":          "",
		"AWS_PROFILE":                 "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_S3":         endpoint,
		"AWS_CONFIG_FILE":             dir + "/config",
		"AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CA_BUNDLE":               "",
		"AWS_WEB_IDENTITY_TOKEN_FILE": "",
		"AWS_ROLE_ARN":                "",
	} {
		t.Setenv(k, v)
	}
}

// openFake opens a store on the fake with the given tuning.
func openFake(t *testing.T, srv *httptest.Server, bucket string, partSize int64, concurrency int) *Store {
	t.Helper()
	isolateAWSEnv(t, srv.URL, "AKIDTEST", "test-secret")
	s, err := Open(context.Background(), Config{Bucket: bucket, PartSize: partSize, Concurrency: concurrency})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}
