package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Part sizes and limits of S3 multipart uploads.
const (
	// DefaultPartSize is S3's smallest, which keeps memory low: 5 MiB
	// parts hold an 8 GiB etcd snapshot (etcd's largest quota) in 1639
	// parts, and 4 concurrent parts use 25 MiB of buffers. On two cores,
	// 8 MiB parts gained ~10% of upload time for ~40 MiB more peak RSS.
	DefaultPartSize int64 = MinPartSize
	// MinPartSize is the smallest part S3 accepts except for the last one.
	MinPartSize int64 = 5 << 20
	// MaxPartSize is the largest part S3 accepts.
	MaxPartSize int64 = 5 << 30
	// MaxParts is the most parts a multipart upload may have, so a stream
	// may hold at most PartSize × MaxParts bytes.
	MaxParts = 10000
	// DefaultConcurrency is how many parts are uploaded at once by default.
	DefaultConcurrency = 4
	// MaxPresignExpiry is the longest validity SigV4 allows a presigned URL.
	MaxPresignExpiry = 7 * 24 * time.Hour
)

// abortTimeout bounds the cleanup requests that run after the caller's
// context is cancelled, so a dead endpoint cannot hang the exit.
const abortTimeout = 30 * time.Second

// Config says which bucket to open and how to reach it. Credentials, region
// and endpoint come from the standard AWS configuration chain; Config holds
// only what that chain cannot express.
type Config struct {
	// Bucket is the bucket every key is relative to.
	Bucket string
	// Region overrides the region of the AWS configuration chain
	// (AWS_REGION, the profile); it must be the bucket's region.
	Region string
	// CABundle is a PEM file with the CA of an S3-compatible store whose
	// certificate is not signed by a public CA. Its certificates are added
	// to the system's roots, so AWS endpoints (STS) still verify.
	CABundle string
	// InsecureSkipVerify disables TLS verification of every endpoint. It is
	// an explicit choice for test stores; the caller warns the user.
	InsecureSkipVerify bool
	// PathStyle addresses buckets as https://endpoint/bucket/key instead of
	// https://bucket.endpoint/key, as most S3-compatible stores need. The SDK
	// already uses path style for an endpoint that is an IP address.
	PathStyle bool
	// PartSize is the size of each part of Upload (DefaultPartSize when 0).
	PartSize int64
	// Concurrency is how many parts Upload sends at once
	// (DefaultConcurrency when 0).
	Concurrency int
}

// withDefaults fills the zero values that have defaults.
func (c Config) withDefaults() Config {
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	return c
}

// Validate checks the configuration without any I/O, so that a command can
// refuse bad flags before it touches a cluster. Zero PartSize and
// Concurrency are valid: Open replaces them with the defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("S3 bucket is empty"))
	} else if err := validBucket(c.Bucket); err != nil {
		errs = append(errs, err)
	}
	if c.PartSize < MinPartSize || c.PartSize > MaxPartSize {
		errs = append(errs, fmt.Errorf("S3 part size %d is out of range: S3 accepts %d (5 MiB) to %d (5 GiB)", c.PartSize, MinPartSize, MaxPartSize))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("S3 upload concurrency %d must be at least 1", c.Concurrency))
	}
	if c.CABundle != "" && c.InsecureSkipVerify {
		errs = append(errs, errors.New("a CA bundle and skipping TLS verification exclude each other: choose one"))
	}
	return errors.Join(errs...)
}

// Store is a bucket opened with Open. It implements the narrow store
// interfaces the workflows declare (steps.Store, restore.Store) and is safe
// for concurrent use.
type Store struct {
	client      *s3.Client
	bucket      string
	partSize    int64
	concurrency int
	maxParts    int32 // MaxParts; lowered by tests
}

// Open loads the standard AWS configuration chain (profiles, AWS_* variables,
// web identity, AWS_ENDPOINT_URL_S3, AWS_CA_BUNDLE) with the few additions of
// cfg and returns a store for cfg.Bucket. It sends no request: credentials
// are fetched lazily, so call CheckWritable to prove the bucket works.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hc, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	opts := []func(*config.LoadOptions) error{config.WithHTTPClient(hc)}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, fmt.Errorf("no AWS region for bucket %q: set AWS_REGION or the profile's region", cfg.Bucket)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// Endpoints that are IP addresses get path style from the SDK's
		// endpoint rules; host names of S3-compatible stores need the flag.
		o.UsePathStyle = cfg.PathStyle
		// Objects uploaded in parts carry composite checksums that the SDK
		// cannot validate on download; it would log a warning on stderr
		// for every Get.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return &Store{client: client, bucket: cfg.Bucket, partSize: cfg.PartSize, concurrency: cfg.Concurrency, maxParts: MaxParts}, nil
}

// newHTTPClient returns the SDK's default HTTP client with the TLS settings
// of cfg. The CA bundle is added to the system roots rather than replacing
// them, because the same client also reaches AWS STS for web identity.
func newHTTPClient(cfg Config) (*awshttp.BuildableClient, error) {
	var roots *x509.CertPool
	if cfg.CABundle != "" {
		pem, err := os.ReadFile(cfg.CABundle)
		if err != nil {
			return nil, fmt.Errorf("read S3 CA bundle: %w", err)
		}
		roots, err = x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("S3 CA bundle %s holds no PEM certificate", cfg.CABundle)
		}
	}
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if roots != nil {
			tr.TLSClientConfig.RootCAs = roots
		}
		// #nosec G402 -- an explicit user choice, warned about by the caller.
		tr.TLSClientConfig.InsecureSkipVerify = cfg.InsecureSkipVerify
	}), nil
}

// Bucket returns the bucket the store was opened on.
func (s *Store) Bucket() string { return s.bucket }

// loc names an object in messages as s3://bucket/key.
func (s *Store) loc(key string) string { return "s3://" + s.bucket + "/" + key }

// bucketPtr returns a pointer for the SDK's inputs.
func (s *Store) bucketPtr() *string { return aws.String(s.bucket) }
