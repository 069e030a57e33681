package s3

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// TestDelete removes an object, treats a missing one as done, and turns a
// refusal into ErrDeleteRefused with a one-line message.
func TestDelete(t *testing.T) {
	ctx := context.Background()
	fake, srv := newFakeS3(t, "bkt")
	store := openFake(t, srv, "bkt", MinPartSize, 1)
	if err := store.Put(ctx, "a/b", []byte("x"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, "a/b"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, ok := fake.object("a/b"); ok {
		t.Fatal("the object is still there")
	}
	if err := store.Delete(ctx, "a/b"); err != nil {
		t.Fatalf("Delete of a missing object: %v", err)
	}
	for _, code := range []string{"AccessDenied", "ObjectLocked"} {
		fake.deleteCode = code
		err := store.Delete(ctx, "a/c")
		if !errors.Is(err, ErrDeleteRefused) {
			t.Fatalf("%s: Delete = %v, want ErrDeleteRefused", code, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "s3://bkt/a/c") || !strings.Contains(msg, code) || strings.ContainsAny(msg, "\n") {
			t.Errorf("%s: message %q should name the object and the code on one line", code, msg)
		}
		if errors.Is(err, ErrObjectLocked) != (code == "ObjectLocked") {
			t.Errorf("%s: errors.Is(ErrObjectLocked) = %v", code, errors.Is(err, ErrObjectLocked))
		}
	}
	fake.deleteCode = "InternalError"
	if err := store.Delete(ctx, "a/c"); err == nil || errors.Is(err, ErrDeleteRefused) {
		t.Errorf("InternalError: Delete = %v, want an error that is not a refusal", err)
	}
}

// TestHeadLock reads an object's lock from HEAD.
func TestHeadLock(t *testing.T) {
	ctx := context.Background()
	_, srv := newFakeS3(t, "bkt")
	store := openFake(t, srv, "bkt", MinPartSize, 1)
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	_, err := store.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("locked"),
		Body: strings.NewReader("x"), ObjectLockMode: types.ObjectLockModeGovernance, ObjectLockRetainUntilDate: &until,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "free", []byte("x"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = store.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("held"),
		Body: strings.NewReader("x"), ObjectLockLegalHoldStatus: types.ObjectLockLegalHoldStatusOn,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key    string
		at     time.Time
		locked bool
	}{
		{"locked", time.Now(), true},
		{"locked", until.Add(time.Second), false},
		{"free", time.Now(), false},
		{"held", time.Now(), true},
	} {
		info, ok, err := store.Head(ctx, c.key)
		if err != nil || !ok {
			t.Fatalf("Head %s: %v %v", c.key, ok, err)
		}
		if got, why := info.Locked(c.at); got != c.locked {
			t.Errorf("%s at %s: Locked = %v (%s), want %v", c.key, c.at, got, why, c.locked)
		}
	}
}
