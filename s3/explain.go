package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// explained is an error with a short message for people that still unwraps
// to the SDK's error for code that inspects it.
type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// Explain turns the usual ways a bucket fails to work — it does not exist,
// access is denied, the credentials are wrong or missing, the bucket lives in
// another region, the endpoint is unreachable or its certificate untrusted —
// into a one-line message that names the bucket and says what to do, because
// the SDK's own messages bury the cause in request IDs and retry counts.
// The result wraps err, so errors.Is and errors.As still see the SDK's error.
// Cancellation is returned unchanged, nil stays nil, and any other error is
// prefixed with the bucket. Messages never hold credentials.
func Explain(err error, bucket string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	b := fmt.Sprintf("S3 bucket %q", bucket)
	say := func(format string, args ...any) error {
		return &explained{msg: fmt.Sprintf(format, args...), err: err}
	}

	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchBucket":
			return say("%s does not exist: create it or correct the bucket name", b)
		case "AccessDenied", "AllAccessDisabled", "Forbidden", "AccountProblem":
			return say("access to %s is denied: check the credentials, and grant the identity in use s3:PutObject, s3:GetObject, s3:DeleteObject, s3:ListBucket and s3:AbortMultipartUpload on it", b)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "InvalidTokenId", "InvalidSecurity":
			return say("bad credentials for %s (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the web identity", b, api.ErrorCode())
		case "ExpiredToken", "TokenRefreshRequired", "RequestExpired":
			return say("the credentials for %s have expired (%s): renew them, or check the clock of this machine", b, api.ErrorCode())
		case "RequestTimeTooSkewed":
			return say("the clock of this machine is too far from the S3 server's for %s: synchronise it", b)
		case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException", "InvalidRegion":
			return say("%s is in another region%s: set AWS_REGION to the bucket's region", b, regionHint(err))
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusMovedPermanently {
		return say("%s is in another region%s: set AWS_REGION to the bucket's region", b, regionHint(err))
	}

	if isCredentialsError(err) {
		return say("no usable AWS credentials for %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a web identity (%s)", b, credentialsCause(err))
	}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	switch {
	case errors.As(err, &hostErr):
		return say("the S3 endpoint's certificate for %s does not match its host name (%v): use the endpoint's name in AWS_ENDPOINT_URL_S3", b, hostErr)
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &invalidCert):
		return say("the S3 endpoint's certificate for %s is not trusted: use --s3-ca-bundle with the CA that signed it", b)
	}
	var recErr tls.RecordHeaderError
	if errors.As(err, &recErr) {
		return say("the S3 endpoint for %s does not speak TLS: use an http:// URL in AWS_ENDPOINT_URL_S3", b)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return say("the S3 endpoint for %s refused the connection: check AWS_ENDPOINT_URL_S3 and that the server runs", b)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return say("cannot resolve the S3 endpoint host %q for %s: check AWS_ENDPOINT_URL_S3, the region and DNS", dnsErr.Name, b)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return say("the S3 endpoint for %s did not answer in time: check the network path and proxy settings", b)
	}
	return fmt.Errorf("%s: %w", b, err)
}

// regionHint names the bucket's region when the server said it.
func regionHint(err error) string {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		if r := re.Response.Header.Get("x-amz-bucket-region"); r != "" {
			return fmt.Sprintf(" (%s)", r)
		}
	}
	return ""
}

// credentialMarkers are the phrases of the SDK's errors when no provider of
// the chain produced credentials; the SDK has no error type for that.
var credentialMarkers = []string{
	"failed to retrieve credentials",
	"failed to refresh cached credentials",
	"get identity:",
}

// isCredentialsError reports whether err says no credentials were found.
func isCredentialsError(err error) bool {
	msg := err.Error()
	for _, m := range credentialMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// credentialsCause is the innermost message of a credentials error, which
// names the provider that failed (profile not found, no IMDS role...).
func credentialsCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
