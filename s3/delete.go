package s3

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// ErrDeleteRefused marks a delete the server refused for the object's sake
// or the identity's: an object lock (retention or legal hold, S3's
// AccessDenied or MinIO's ObjectLocked), or a policy without
// s3:DeleteObject. A caller reports it and goes on; it must not try to get
// round it (a governance bypass, a new version).
var ErrDeleteRefused = errors.New("delete refused")

// ErrObjectLocked marks a refusal that the server said is an object lock
// (MinIO's ObjectLocked); it also wraps ErrDeleteRefused. S3 says
// AccessDenied for a lock and for a missing permission alike, so a lock
// there is only known from the object's headers (ObjectInfo.Locked).
var ErrObjectLocked = errors.New("object locked")

// deleteRefusedCodes are the error codes of a refused delete.
var deleteRefusedCodes = map[string]bool{
	"AccessDenied": true,
	"ObjectLocked": true,
}

// Delete removes the object at key. A key that does not exist is not an
// error (S3's DELETE is idempotent), so a removal interrupted halfway can be
// run again. On a versioned bucket the object's data stays as a noncurrent
// version behind a delete marker; the bucket's lifecycle rules decide when
// it goes. A refusal wraps ErrDeleteRefused; other errors are explained by
// Explain.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: s.bucketPtr(), Key: aws.String(key)})
	if err == nil || isNotFound(err) {
		return nil
	}
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "ObjectLocked" {
		return fmt.Errorf("delete %s: %w: %w (ObjectLocked; hcpsnap does not get round it)", s.loc(key), ErrDeleteRefused, ErrObjectLocked)
	}
	if errors.As(err, &api) && deleteRefusedCodes[api.ErrorCode()] {
		return fmt.Errorf("delete %s: %w (%s: an object lock or a policy without s3:DeleteObject; hcpsnap does not get round it)", s.loc(key), ErrDeleteRefused, api.ErrorCode())
	}
	return fmt.Errorf("delete %s: %w", s.loc(key), Explain(err, s.bucket))
}

// Locked reports whether the object cannot be deleted now because of an
// object lock: a retention date in the future or a legal hold. The reason
// names which, for a report.
func (o ObjectInfo) Locked(now time.Time) (bool, string) {
	switch {
	case o.LegalHold:
		return true, "legal hold"
	case o.RetainUntil.After(now):
		return true, "retained until " + o.RetainUntil.UTC().Format(time.RFC3339)
	}
	return false, ""
}

// lockInfo copies the object lock headers of a HEAD response.
func lockInfo(out *s3.HeadObjectOutput, info *ObjectInfo) {
	if out.ObjectLockRetainUntilDate != nil {
		info.RetainUntil = *out.ObjectLockRetainUntilDate
	}
	info.LegalHold = out.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn
}
