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
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Server-side encryption modes accepted by Put.
const (
	SSES3  = string(types.ServerSideEncryptionAes256)
	SSEKMS = string(types.ServerSideEncryptionAwsKms)
)

// probePrefix names the objects CheckWritable writes and deletes.
const probePrefix = ".hcpsnap-write-check-"

// CheckWritable puts a small probe object under prefix and deletes it again,
// which proves the bucket exists, the credentials are valid and allow both
// writes and deletes (the latter is needed to clean up) before anything is
// changed in the cluster. Errors are explained by Explain.
func (s *Store) CheckWritable(ctx context.Context, prefix string) error {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	key := joinKey(prefix, probePrefix+hex.EncodeToString(id[:]))
	body := []byte("hcpsnap write check\n")
	sum := sha256.Sum256(body)
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:            s.bucketPtr(),
		Key:               aws.String(key),
		Body:              bytes.NewReader(body),
		ContentLength:     aws.Int64(int64(len(body))),
		ContentType:       aws.String("text/plain"),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
		ChecksumSHA256:    aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	})
	if err != nil {
		return Explain(err, s.bucket)
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: s.bucketPtr(), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("delete write-check object %s: %w", s.loc(key), Explain(err, s.bucket))
	}
	return nil
}

// joinKey joins a key prefix and a name with exactly one slash.
func joinKey(prefix, name string) string {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return name
	}
	return prefix + "/" + name
}

// Head returns the object's size, metadata and object lock, or ok=false when the key does
// not exist, so that a re-run can skip an upload that already completed.
// A HEAD response has no body, so a missing bucket also reads as a missing
// key; CheckWritable tells them apart.
func (s *Store) Head(ctx context.Context, key string) (ObjectInfo, bool, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: s.bucketPtr(), Key: aws.String(key)})
	if err != nil {
		if isNotFound(err) {
			return ObjectInfo{}, false, nil
		}
		return ObjectInfo{}, false, fmt.Errorf("head %s: %w", s.loc(key), Explain(err, s.bucket))
	}
	info := ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), Metadata: out.Metadata}
	if out.LastModified != nil {
		info.LastModified = *out.LastModified
	}
	lockInfo(out, &info)
	return info, true, nil
}

// isNotFound reports whether err says the object does not exist.
func isNotFound(err error) bool {
	var nf *types.NotFound
	var nk *types.NoSuchKey
	if errors.As(err, &nf) || errors.As(err, &nk) {
		return true
	}
	var api smithy.APIError
	return errors.As(err, &api) && (api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchKey")
}

// Put stores a small object (a manifest, a key bundle) in one request with a
// SHA-256 checksum the server verifies, and with server-side encryption when
// opts.SSE asks for it.
func (s *Store) Put(ctx context.Context, key string, data []byte, opts PutOptions) error {
	if err := validSSE(opts.SSE, opts.SSEKMSKeyID); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	in := &s3.PutObjectInput{
		Bucket:            s.bucketPtr(),
		Key:               aws.String(key),
		Body:              bytes.NewReader(data),
		ContentLength:     aws.Int64(int64(len(data))),
		Metadata:          opts.Metadata,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
		ChecksumSHA256:    aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	}
	if opts.ContentType != "" {
		in.ContentType = aws.String(opts.ContentType)
	}
	if opts.SSE != "" {
		in.ServerSideEncryption = types.ServerSideEncryption(opts.SSE)
	}
	if opts.SSEKMSKeyID != "" {
		in.SSEKMSKeyId = aws.String(opts.SSEKMSKeyID)
	}
	if _, err := s.client.PutObject(ctx, in); err != nil {
		return fmt.Errorf("put %s: %w", s.loc(key), Explain(err, s.bucket))
	}
	return nil
}

// validSSE checks a server-side encryption choice; a KMS key ID only makes
// sense with aws:kms (without one, the bucket's default KMS key is used).
func validSSE(sse, kmsKeyID string) error {
	switch sse {
	case "", SSES3, SSEKMS:
	default:
		return fmt.Errorf("server-side encryption %q is not supported: use %q or %q", sse, SSES3, SSEKMS)
	}
	if kmsKeyID != "" && sse != SSEKMS {
		return fmt.Errorf("a KMS key ID needs server-side encryption %q", SSEKMS)
	}
	return nil
}

// AbortUploads aborts every unfinished multipart upload of exactly key, such
// as the one a crashed run left behind; uploads of other keys that share the
// prefix are left alone. Uploads that vanish meanwhile are not an error.
func (s *Store) AbortUploads(ctx context.Context, key string) error {
	var errs []error
	p := s3.NewListMultipartUploadsPaginator(s.client, &s3.ListMultipartUploadsInput{Bucket: s.bucketPtr(), Prefix: aws.String(key)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("list multipart uploads of %s: %w", s.loc(key), Explain(err, s.bucket)))...)
		}
		for _, u := range page.Uploads {
			if aws.ToString(u.Key) != key {
				continue
			}
			if err := s.abort(ctx, key, aws.ToString(u.UploadId)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// abort aborts one multipart upload; one that no longer exists is done.
func (s *Store) abort(ctx context.Context, key, uploadID string) error {
	_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: s.bucketPtr(), Key: aws.String(key), UploadId: aws.String(uploadID),
	})
	var nsu *types.NoSuchUpload
	if err == nil || errors.As(err, &nsu) {
		return nil
	}
	return fmt.Errorf("abort multipart upload %s of %s: %w", uploadID, s.loc(key), Explain(err, s.bucket))
}

// Get opens the object for reading; the caller closes the body. A missing
// key is an error that wraps *types.NoSuchKey.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: s.bucketPtr(), Key: aws.String(key)})
	if err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("get %s: %w", s.loc(key), Explain(err, s.bucket))
	}
	return out.Body, ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), Metadata: out.Metadata}, nil
}

// GetRange reads n bytes of the object from offset off in one ranged GET;
// a range past the end is an error.
func (s *Store) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if off < 0 || n <= 0 {
		return nil, fmt.Errorf("read %s: invalid range %d+%d", s.loc(key), off, n)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: s.bucketPtr(), Key: aws.String(key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	})
	if err != nil {
		return nil, fmt.Errorf("get %s bytes %d-%d: %w", s.loc(key), off, off+n-1, Explain(err, s.bucket))
	}
	defer out.Body.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(out.Body, buf); err != nil {
		return nil, fmt.Errorf("read %s bytes %d-%d: %w", s.loc(key), off, off+n-1, err)
	}
	return buf, nil
}

// List returns every object whose key starts with prefix, in key order,
// following continuation tokens. Listings carry no metadata; use Head for it.
func (s *Store) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var objs []ObjectInfo
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: s.bucketPtr(), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", s.loc(prefix), Explain(err, s.bucket))
		}
		for _, o := range page.Contents {
			objs = append(objs, ObjectInfo{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), LastModified: aws.ToTime(o.LastModified)})
		}
	}
	return objs, nil
}

// Presign returns a SigV4 presigned GET URL for key that anyone holding it
// can use until expiresAt, e.g. for a restore job without AWS credentials.
// The URL is a bearer credential: never log it. SigV4 caps expires at
// 7 days; temporary credentials (web identity, SSO) end the URL's validity
// earlier, when they expire. Presign sends no request, so it does not check
// that the object exists.
func (s *Store) Presign(ctx context.Context, key string, expires time.Duration) (string, time.Time, error) {
	if expires < time.Second || expires > MaxPresignExpiry {
		return "", time.Time{}, fmt.Errorf("presigned URL validity %s is out of range: it must be between 1s and 7 days (168h)", expires)
	}
	// SigV4 counts whole seconds from a signing time truncated to the
	// second, so this is the earliest the URL can expire.
	expires = expires.Truncate(time.Second)
	now := time.Now().Truncate(time.Second)
	req, err := s3.NewPresignClient(s.client).PresignGetObject(ctx,
		&s3.GetObjectInput{Bucket: s.bucketPtr(), Key: aws.String(key)},
		s3.WithPresignExpires(expires))
	if err != nil {
		// The SDK's error describes the signing step and holds no URL.
		return "", time.Time{}, fmt.Errorf("presign GET of %s: %w", s.loc(key), Explain(err, s.bucket))
	}
	return req.URL, now.Add(expires), nil
}
