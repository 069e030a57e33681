// Package s3 owns hcpsnap's access to an S3 bucket (AWS S3 or an
// S3-compatible store such as MinIO or Ceph RGW). It serves the store
// interfaces the backup and restore workflows declare, over data types it
// owns (ObjectInfo, UploadOptions, UploadResult, PutOptions), and adds what
// the restore side needs: Get, List, Presign and ParseURL.
//
// Credentials, region and endpoint come from the standard AWS configuration
// chain (profiles, AWS_* environment variables, web identity and
// AWS_ENDPOINT_URL_S3); the package adds only what that chain cannot express:
// a custom CA bundle, an explicit opt-out of TLS verification, path-style
// addressing and the multipart tuning.
//
// Upload is a streaming multipart upload written here rather than taken from
// the SDK's transfer manager, because hcpsnap must learn the upload ID before
// any data moves (to record it in its run file and abort it after a crash),
// and must abort the upload itself on any error. Memory is bounded by
// PartSize × (Concurrency+1) whatever the size of the stream; nothing is
// written to local disk. Every part carries a SHA-256 checksum that the
// server verifies, and the SHA-256 of the whole stream is computed as it is
// read.
//
// Errors never contain credentials or presigned URLs. Explain turns the
// usual failures (missing bucket, denied access, bad credentials, wrong
// region, unreachable endpoint, untrusted certificate) into one-line
// messages that say what to do.
// Layer: adapter. It imports no workflow and no engine.
package s3
