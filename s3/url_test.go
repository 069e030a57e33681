package s3

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in      string
		bucket  string
		key     string
		wantErr string
	}{
		// s3:// URLs take the key verbatim.
		{in: "s3://bucket/key", bucket: "bucket", key: "key"},
		{in: "S3://bucket/a/b/c.db", bucket: "bucket", key: "a/b/c.db"},
		{in: "s3://my.bucket-1/dir/", bucket: "my.bucket-1", key: "dir/"},
		{in: "s3://bucket", bucket: "bucket", key: ""},
		{in: "s3://bucket/", bucket: "bucket", key: ""},
		{in: "s3://bucket/a b%20c?d#e", bucket: "bucket", key: "a b%20c?d#e"},
		{in: "s3:///key", wantErr: "no bucket"},
		{in: "s3://", wantErr: "no bucket"},
		{in: "s3://Bucket/key", wantErr: "lower-case"},
		{in: "s3://ab/key", wantErr: "3 to 63"},
		{in: "s3://" + strings.Repeat("a", 64) + "/k", wantErr: "3 to 63"},
		{in: "s3://-bucket/key", wantErr: "begin and end"},
		{in: "s3://a..b/key", wantErr: "adjacent dots"},
		{in: "s3://192.168.1.1/key", wantErr: "IP address"},
		{in: "s3://user:pw@bucket/key", wantErr: "lower-case letters"},
		{in: "s3://bucket?X-Amz-Signature=secret", wantErr: "lower-case letters"},
		{in: "s3://bucket?X-Amz-Signature=secret" + strings.Repeat("0", 64), wantErr: "lower-case letters"},

		// Virtual-hosted style.
		{in: "https://bucket.s3.amazonaws.com/key", bucket: "bucket", key: "key"},
		{in: "https://bucket.s3.us-west-2.amazonaws.com/a/b.db", bucket: "bucket", key: "a/b.db"},
		{in: "https://my.dotted.bucket.s3.eu-central-1.amazonaws.com/k", bucket: "my.dotted.bucket", key: "k"},
		{in: "https://bucket.s3-us-west-2.amazonaws.com/k", bucket: "bucket", key: "k"},
		{in: "https://bucket.s3-external-1.amazonaws.com/k", bucket: "bucket", key: "k"},
		{in: "https://bucket.s3.dualstack.us-east-1.amazonaws.com/k", bucket: "bucket", key: "k"},
		{in: "https://bucket.s3.cn-north-1.amazonaws.com.cn/k", bucket: "bucket", key: "k"},
		{in: "HTTPS://Bucket.S3.Amazonaws.com/Key", bucket: "bucket", key: "Key"},
		{in: "https://bucket.s3.amazonaws.com/a%20b/c%2Fd", bucket: "bucket", key: "a b/c/d"},
		{in: "https://bucket.s3.amazonaws.com/", bucket: "bucket", key: ""},
		{in: "https://bucket.s3.amazonaws.com", bucket: "bucket", key: ""},
		{in: "https://s3.bucket.s3.us-east-1.amazonaws.com/k", bucket: "s3.bucket", key: "k"},

		// Path style.
		{in: "https://s3.amazonaws.com/bucket/key", bucket: "bucket", key: "key"},
		{in: "https://s3.us-east-2.amazonaws.com/bucket/a/b", bucket: "bucket", key: "a/b"},
		{in: "https://s3-us-west-1.amazonaws.com/bucket/k", bucket: "bucket", key: "k"},
		{in: "https://s3.dualstack.us-east-1.amazonaws.com/bucket/k", bucket: "bucket", key: "k"},
		{in: "https://s3.amazonaws.com/bucket/a%2Fb", bucket: "bucket", key: "a/b"},
		{in: "https://s3.amazonaws.com/bucket", bucket: "bucket", key: ""},
		{in: "https://s3.amazonaws.com/", wantErr: "no bucket"},
		{in: "https://s3.amazonaws.com/buck%2Fet/k", wantErr: "lower-case letters"},

		// Everything else.
		{in: "", wantErr: "empty"},
		{in: "bucket/key", wantErr: "use s3://bucket/key"},
		{in: "/tmp/snapshot.db", wantErr: "use s3://bucket/key"},
		{in: "gs://bucket/key", wantErr: "use s3://bucket/key"},
		{in: "http://bucket.s3.amazonaws.com/key", wantErr: "plain http://"},
		{in: "https://bucket.s3.amazonaws.com/key?X-Amz-Signature=secret", wantErr: "query string"},
		{in: "https://bucket.s3.amazonaws.com/key?", wantErr: "query string"},
		{in: "https://bucket.s3.amazonaws.com/key#frag", wantErr: "fragment"},
		{in: "https://u:p@bucket.s3.amazonaws.com/key", wantErr: "user information"},
		{in: "https://bucket.s3.amazonaws.com:443/key", wantErr: "no port"},
		{in: "https://minio.example.com/bucket/key", wantErr: "not an AWS S3 endpoint"},
		{in: "https://amazonaws.com/bucket/key", wantErr: "not an AWS S3 endpoint"},
		{in: "https://ec2.us-east-1.amazonaws.com/bucket/key", wantErr: "not an AWS S3 endpoint"},
		{in: "https://bucket.s3-website-us-east-1.amazonaws.com/k", wantErr: "not an AWS S3 endpoint"},
		{in: "https://bucket.s3.dualstack.amazonaws.com/k", wantErr: "not an AWS S3 endpoint"},
		{in: "https://bucket.s3.amazonaws.com.evil.com/k", wantErr: "not an AWS S3 endpoint"},
		{in: "https://a..b.s3.amazonaws.com/k", wantErr: "adjacent dots"},
		{in: "https://bucket.s3.amazonaws.com/%zz", wantErr: "not a valid https URL"},
		{in: "https://[::1/k", wantErr: "not a valid https URL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			bucket, key, err := ParseURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURL(%q) = %q, %q, %v; want error with %q", tt.in, bucket, key, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error has several lines: %q", err)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error repeats the query string: %q", err)
				}
				return
			}
			if err != nil || bucket != tt.bucket || key != tt.key {
				t.Fatalf("ParseURL(%q) = %q, %q, %v; want %q, %q", tt.in, bucket, key, err, tt.bucket, tt.key)
			}
		})
	}
}
