package s3

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ParseURL splits an S3 location into bucket and key. It accepts
//
//	s3://bucket/key                                  (the key is taken as is)
//	https://bucket.s3[.region].amazonaws.com/key      (virtual-hosted style)
//	https://s3[.region].amazonaws.com/bucket/key      (path style)
//
// including the legacy s3-region and dualstack host names and the China
// partition (amazonaws.com.cn); the https key is percent-decoded. The key may
// be empty ("s3://bucket/" names a prefix); callers that need an object check
// it. Anything else — other schemes, S3-compatible hosts that cannot be told
// from any web server, query strings (a presigned URL is a credential, not a
// location) — is rejected with a one-line error that does not repeat the
// input, so a credential pasted by mistake does not reach the logs.
func ParseURL(s string) (bucket, key string, err error) {
	switch {
	case hasPrefixFold(s, "s3://"):
		return parseS3Scheme(s[len("s3://"):])
	case hasPrefixFold(s, "https://"):
		return parseHTTPS(s)
	case hasPrefixFold(s, "http://"):
		return "", "", errors.New("invalid S3 URL: plain http:// is not accepted; use s3://bucket/key")
	case s == "":
		return "", "", errors.New("invalid S3 URL: it is empty; use s3://bucket/key")
	default:
		return "", "", errors.New("invalid S3 URL: use s3://bucket/key or an https:// S3 object URL")
	}
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case, as URL schemes are.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// parseS3Scheme parses what follows s3://. Keys are taken verbatim, as the
// AWS CLI does: they are not percent-encoded in s3:// URLs.
func parseS3Scheme(rest string) (string, string, error) {
	bucket, key, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", errors.New("invalid S3 URL: no bucket after s3://")
	}
	if err := validBucket(bucket); err != nil {
		return "", "", fmt.Errorf("invalid S3 URL: %w", err)
	}
	return bucket, key, nil
}

// awsSuffixes are the domains of S3's public endpoints.
var awsSuffixes = []string{".amazonaws.com", ".amazonaws.com.cn"}

// parseHTTPS parses an https URL of an AWS S3 endpoint.
func parseHTTPS(s string) (string, string, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Error repeats the input; say only what is wrong.
		return "", "", errors.New("invalid S3 URL: it is not a valid https URL")
	}
	switch {
	case u.RawQuery != "" || u.ForceQuery:
		return "", "", errors.New("invalid S3 URL: it has a query string (a presigned URL is not a location); use s3://bucket/key")
	case u.Fragment != "":
		return "", "", errors.New("invalid S3 URL: it has a fragment")
	case u.User != nil:
		return "", "", errors.New("invalid S3 URL: it has user information")
	case u.Port() != "":
		return "", "", errors.New("invalid S3 URL: AWS S3 URLs have no port; use s3://bucket/key")
	}
	host := strings.ToLower(u.Hostname())
	var rest string
	for _, suffix := range awsSuffixes {
		if r, ok := strings.CutSuffix(host, suffix); ok {
			rest = r
			break
		}
	}
	if rest == "" {
		return "", "", errors.New("invalid S3 URL: the host is not an AWS S3 endpoint; use s3://bucket/key")
	}
	labels := strings.Split(rest, ".")
	i := serviceLabel(labels)
	if i < 0 {
		return "", "", errors.New("invalid S3 URL: the host is not an AWS S3 endpoint; use s3://bucket/key")
	}
	// Split before decoding, so that an encoded slash stays in the key.
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	if i == 0 {
		// Path style: the bucket is the first segment of the path.
		bucket, key, _ := strings.Cut(path, "/")
		if key, err = url.PathUnescape(key); err != nil {
			return "", "", errors.New("invalid S3 URL: the key is not validly percent-encoded")
		}
		if bucket == "" {
			return "", "", errors.New("invalid S3 URL: no bucket in the path")
		}
		if err := validBucket(bucket); err != nil {
			return "", "", fmt.Errorf("invalid S3 URL: %w", err)
		}
		return bucket, key, nil
	}
	bucket := strings.Join(labels[:i], ".")
	if err := validBucket(bucket); err != nil {
		return "", "", fmt.Errorf("invalid S3 URL: %w", err)
	}
	key, err := url.PathUnescape(path)
	if err != nil {
		return "", "", errors.New("invalid S3 URL: the key is not validly percent-encoded")
	}
	return bucket, key, nil
}

// serviceLabel returns the index of the "s3" label of an endpoint host
// without its AWS suffix, or -1 when the host is not an S3 endpoint. The S3
// part of the host is one of s3, s3.REGION, s3-REGION, s3.dualstack.REGION;
// what precedes it is the bucket.
func serviceLabel(labels []string) int {
	n := len(labels)
	last := labels[n-1]
	switch {
	case n >= 3 && labels[n-3] == "s3" && labels[n-2] == "dualstack" && isRegion(last):
		return n - 3
	case n >= 2 && labels[n-2] == "s3" && isRegion(last) && last != "dualstack":
		return n - 2
	case last == "s3":
		return n - 1
	case strings.HasPrefix(last, "s3-") && isRegion(last[len("s3-"):]) &&
		!strings.HasPrefix(last, "s3-website") && !strings.HasPrefix(last, "s3-accesspoint"):
		return n - 1
	}
	return -1
}

// isRegion reports whether s looks like an AWS region name (us-east-1,
// eu-central-2, us-gov-west-1, external-1).
func isRegion(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' || !strings.Contains(s, "-") {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// validBucket checks S3's naming rules for general purpose buckets: 3 to 63
// characters of lower-case letters, digits, dots and hyphens, beginning and
// ending with a letter or digit, no two adjacent dots, not an IP address.
// The characters are checked first, and a name with others is not quoted:
// it may be a credential or a query string pasted by mistake
// ("s3://bucket?X-Amz-Signature=...", "s3://user:password@bucket/key").
func validBucket(b string) error {
	for _, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '-' {
			return errors.New("the bucket name may hold only lower-case letters, digits, dots and hyphens")
		}
	}
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters long", b)
	}
	if !isAlnum(b[0]) || !isAlnum(b[len(b)-1]) {
		return fmt.Errorf("bucket name %q must begin and end with a letter or digit", b)
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("bucket name %q must not hold two adjacent dots", b)
	}
	if isIPv4(b) {
		return fmt.Errorf("bucket name %q must not be an IP address", b)
	}
	return nil
}

// isAlnum reports whether c is a lower-case letter or a digit.
func isAlnum(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }

// isIPv4 reports whether s is four dot-separated groups of digits.
func isIPv4(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}
