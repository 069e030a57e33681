package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// sdkError wraps err the way the SDK returns an operation's failure.
func sdkError(status int, header http.Header, err error) error {
	return &smithy.OperationError{
		ServiceID:     "S3",
		OperationName: "PutObject",
		Err: &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status, Header: header}},
				Err:      err,
			},
			RequestID: "REQ123",
		},
	}
}

func apiError(status int, code string) error {
	return sdkError(status, http.Header{}, &smithy.GenericAPIError{Code: code, Message: "server says " + code})
}

// sendError wraps a transport failure the way the SDK does.
func sendError(err error) error {
	return &smithy.OperationError{
		ServiceID:     "S3",
		OperationName: "PutObject",
		Err:           fmt.Errorf("exceeded maximum number of attempts, 3, %w", &smithyhttp.RequestSendError{Err: err}),
	}
}

func TestExplain(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		name string
		err  error
		want string // the whole message, or a part of it when prefixed by "…"
	}{
		{"no such bucket (typed)", sdkError(404, http.Header{}, &types.NoSuchBucket{}),
			`S3 bucket "b" does not exist: create it or correct the bucket name`},
		{"no such bucket (generic)", apiError(404, "NoSuchBucket"),
			`S3 bucket "b" does not exist: create it or correct the bucket name`},
		{"access denied", apiError(403, "AccessDenied"),
			`…access to S3 bucket "b" is denied: check the credentials, and grant the identity in use s3:PutObject`},
		{"unknown key", apiError(403, "InvalidAccessKeyId"),
			`…bad credentials for S3 bucket "b" (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`},
		{"wrong secret", apiError(403, "SignatureDoesNotMatch"),
			`…bad credentials for S3 bucket "b" (SignatureDoesNotMatch)`},
		{"expired token", apiError(400, "ExpiredToken"),
			`…the credentials for S3 bucket "b" have expired`},
		{"clock skew", apiError(403, "RequestTimeTooSkewed"),
			`…clock of this machine`},
		{"wrong region (malformed header)", apiError(400, "AuthorizationHeaderMalformed"),
			`S3 bucket "b" is in another region: set AWS_REGION to the bucket's region`},
		{"wrong region (redirect with region header)",
			sdkError(301, http.Header{"X-Amz-Bucket-Region": {"eu-west-1"}}, &smithy.GenericAPIError{Code: "PermanentRedirect"}),
			`S3 bucket "b" is in another region (eu-west-1): set AWS_REGION to the bucket's region`},
		{"wrong region (HEAD without body)",
			sdkError(301, http.Header{"X-Amz-Bucket-Region": {"us-west-2"}}, errors.New("http 301")),
			`S3 bucket "b" is in another region (us-west-2): set AWS_REGION to the bucket's region`},
		{"connection refused", sendError(refused),
			`the S3 endpoint for S3 bucket "b" refused the connection: check AWS_ENDPOINT_URL_S3 and that the server runs`},
		{"unknown CA", sendError(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}),
			`the S3 endpoint's certificate for S3 bucket "b" is not trusted: use --s3-ca-bundle with the CA that signed it`},
		{"bare x509 error", sendError(x509.UnknownAuthorityError{}),
			`…use --s3-ca-bundle`},
		{"expired certificate", sendError(x509.CertificateInvalidError{Reason: x509.Expired}),
			`…use --s3-ca-bundle`},
		{"host name mismatch", sendError(&tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "minio.local"}}),
			`…does not match its host name`},
		{"http endpoint spoken to with TLS", sendError(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}),
			`…does not speak TLS`},
		{"DNS", sendError(&net.DNSError{Err: "no such host", Name: "minio.invalid", IsNotFound: true}),
			`cannot resolve the S3 endpoint host "minio.invalid" for S3 bucket "b": check AWS_ENDPOINT_URL_S3, the region and DNS`},
		{"no credentials", &smithy.OperationError{ServiceID: "S3", OperationName: "PutObject",
			Err: fmt.Errorf("get identity: get credentials: failed to refresh cached credentials, %w", errors.New("no EC2 IMDS role found"))},
			`no usable AWS credentials for S3 bucket "b": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a web identity (no EC2 IMDS role found)`},
		{"anything else", apiError(500, "InternalError"),
			`…S3 bucket "b": operation error S3: PutObject`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Explain(tt.err, "b")
			if got == nil {
				t.Fatal("Explain returned nil")
			}
			msg := got.Error()
			if part, ok := strings.CutPrefix(tt.want, "…"); ok {
				if !strings.Contains(msg, part) {
					t.Errorf("Explain = %q, want it to contain %q", msg, part)
				}
			} else if msg != tt.want {
				t.Errorf("Explain = %q\nwant      %q", msg, tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message has several lines: %q", msg)
			}
			if !errors.Is(got, tt.err) {
				t.Error("the explained error does not wrap the original")
			}
		})
	}
}

func TestExplainPassesThrough(t *testing.T) {
	if Explain(nil, "b") != nil {
		t.Error("Explain(nil) != nil")
	}
	for _, err := range []error{context.Canceled, fmt.Errorf("put: %w", context.DeadlineExceeded)} {
		if got := Explain(err, "b"); got != err {
			t.Errorf("Explain(%v) = %v, want it unchanged", err, got)
		}
	}
}
