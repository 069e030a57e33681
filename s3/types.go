package s3

import "time"

// The values below cross the store's interface. They belong to this adapter
// (not to a workflow) so that the workflows that declare the narrow store
// interfaces they need (steps.Store, restore.Store) and every implementation
// of those interfaces (Store, the dry-run decorator, test fakes) import them
// from here, and no import runs back up from an adapter to a workflow.

// ObjectInfo describes an object in the store.
type ObjectInfo struct {
	Key      string
	Size     int64
	Metadata map[string]string
	// LastModified is when the object was stored (List and Head).
	LastModified time.Time
	// RetainUntil and LegalHold are the object lock of the object (Head
	// only): it cannot be deleted before RetainUntil, nor while LegalHold.
	RetainUntil time.Time
	LegalHold   bool
}

// UploadOptions tune a streamed multipart upload.
type UploadOptions struct {
	// Metadata is stored with the object (x-amz-meta-*).
	Metadata map[string]string
	// OnPart is called after each part is stored with the bytes stored so far.
	OnPart func(done int64)
	// OnCreate is called with the upload ID once the upload exists, so that
	// it can be recorded (and aborted after a crash) before any data moves.
	OnCreate func(uploadID string)
}

// UploadResult is what a completed upload produced.
type UploadResult struct {
	Size int64
	ETag string
}

// PutOptions tune the upload of a small object.
type PutOptions struct {
	ContentType string
	Metadata    map[string]string
	// SSE is "", "AES256" or "aws:kms"; SSEKMSKeyID selects the KMS key.
	SSE         string
	SSEKMSKeyID string
}
