package s3

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParseURL feeds ParseURL arbitrary locations. It must not panic; what
// it accepts must be a valid bucket and a key that s3://, virtual-hosted
// and path-style URLs built from them give back; what it refuses it must
// say in one line without echoing the query string, as that is where a
// presigned URL carries its signature.
//
// The key is not required to be non-empty or free of a leading "/":
// ParseURL documents "s3://bucket/" as naming a prefix (callers that need an
// object check it), and "s3://bucket//k" names the key "/k", as with the AWS
// CLI and S3 itself.
func FuzzParseURL(f *testing.F) {
	for _, seed := range []string{
		"s3://hcpsnap-backups/clusters/example/20250101T000000Z/manifest.json",
		"S3://bucket/a b%20c?d#e",
		"s3://bucket//k",
		"s3://bucket?X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6",
		"https://hcpsnap-backups.s3.us-east-1.amazonaws.com/example/snapshot.db",
		"https://my.dotted.bucket.s3.dualstack.eu-central-1.amazonaws.com/a%2Fb/c%20d",
		"https://s3-us-west-2.amazonaws.com/bucket/a/b",
		"https://bucket.s3.cn-north-1.amazonaws.com.cn/k",
		"https://hcpsnap-backups.s3.us-east-1.amazonaws.com/example/snapshot.db?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6",
		"https://u:p@bucket.s3.amazonaws.com:443/k#f",
		"https://[::1/k",
		"http://bucket.s3.amazonaws.com/k",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		bucket, key, err := ParseURL(in)
		if err != nil {
			msg := err.Error()
			if bucket != "" || key != "" {
				t.Errorf("ParseURL(%q) returned %q, %q with an error", in, bucket, key)
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("ParseURL(%q): the error is not one line: %q", in, msg)
			}
			// No message of ParseURL holds '?', '=' or '&': one that does
			// repeats the input, and a query string at that.
			if strings.Contains(msg, "?") {
				t.Errorf("ParseURL(%q): the error repeats the input: %q", in, msg)
			}
			if _, q, ok := strings.Cut(in, "?"); ok && len(q) >= 8 && strings.ContainsAny(q, "=&") && strings.Contains(msg, q) {
				t.Errorf("ParseURL(%q): the error repeats the query string: %q", in, msg)
			}
			return
		}
		if err := validBucket(bucket); err != nil {
			t.Fatalf("ParseURL(%q) accepted the bucket %q: %v", in, bucket, err)
		}
		for _, u := range []string{
			"s3://" + bucket + "/" + key,
			"https://" + bucket + ".s3.us-east-1.amazonaws.com/" + url.PathEscape(key),
			"https://s3.amazonaws.com/" + bucket + "/" + url.PathEscape(key),
		} {
			b, k, err := ParseURL(u)
			if err != nil || b != bucket || k != key {
				t.Fatalf("ParseURL(%q) = %q, %q, but ParseURL(%q) = %q, %q, %v", in, bucket, key, u, b, k, err)
			}
		}
	})
}
