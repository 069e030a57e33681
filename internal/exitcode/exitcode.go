package exitcode

import (
	"context"
	"errors"
	"fmt"
)

// Code is a process exit status with a documented meaning; the table lives in
// the README and in `hcpsnap --help`.
type Code int

// The exit codes. They are part of hcpsnap's interface: CI jobs branch on them,
// so a value never changes meaning.
const (
	// OK: the command did all it was asked to do.
	OK Code = 0
	// Internal: an unexpected error that fits no other class; report it as a bug.
	Internal Code = 1
	// Usage: a flag, argument or input file is invalid; nothing was read or changed.
	Usage Code = 2
	// Precondition: a check failed before anything was changed (cluster missing,
	// bucket unreachable, another run holds the lock).
	Precondition Code = 3
	// Restored: a step failed after changes were made, and every change was undone.
	Restored Code = 4
	// ManualAction: a step failed and at least one change could not be undone;
	// the message says what is left and how to finish (often `--resume`).
	ManualAction Code = 5
	// Partial: the command did part of its work and the rest failed, each
	// failure reported, and what was done stands: a fleet backup where some
	// clusters' backups failed and were undone (also when all failed: the
	// summary has a line per cluster; 5 wins when one needs a hand), a
	// prune that could not remove some backups it chose (the next prune
	// finishes them), a backup that completed whose --prune failed, or a
	// pull-node that copied some snapshots and failed on another.
	Partial Code = 6
	// Unusable: `verify` found a backup that cannot be restored: its
	// snapshot is missing, truncated or does not match its manifest, or
	// etcd's own restore code (or an etcd started on the result) fails.
	Unusable Code = 7
	// KeyMismatch: `verify --drill` found Secrets that the backup's key
	// bundle does not decrypt, or no key bundle for Secrets that need one:
	// a cluster restored from it could not read its Secrets.
	KeyMismatch Code = 8
	// Interrupted: SIGINT or SIGTERM ended the run after every change was undone.
	Interrupted Code = 130
)

// Table lists every code with its meaning, in the order the README shows them.
var Table = []struct {
	Code    Code
	Meaning string
}{
	{OK, "success"},
	{Internal, "unexpected error (a bug): please report it with the log"},
	{Usage, "usage error: a flag, argument or input is invalid; nothing was changed"},
	{Precondition, "precondition failed: a check before any change failed; nothing was changed"},
	{Restored, "a step failed; every change was undone and the cluster is as it was"},
	{ManualAction, "a step failed and a change could not be undone: manual action needed (see the message; often --resume)"},
	{Partial, "done in part: some of the work failed and is reported, the rest stands (a fleet where some or all clusters' backups failed and were undone, see the summary; a prune that left backups it chose; a backup that completed but whose --prune failed; a pull-node that copied some snapshots and failed on another)"},
	{Unusable, "verify: a backup is unusable (snapshot missing, truncated or not matching its manifest, or etcd cannot restore or open it)"},
	{KeyMismatch, "verify --drill: the key bundle does not decrypt the backup's Secrets, is missing where Secrets need it, or the data names a KMS key the manifest does not record"},
	{Interrupted, "interrupted by SIGINT or SIGTERM; every change was undone"},
}

// Error is an error with the exit code it should end the process with.
type Error struct {
	Code Code
	Err  error
}

// Error returns the wrapped error's message: the code is for the process, not the reader.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap exposes the wrapped error to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// New wraps err with code; a nil err stays nil.
func New(code Code, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Usagef returns a usage error (exit 2) with a formatted message.
func Usagef(format string, args ...any) error {
	return &Error{Code: Usage, Err: fmt.Errorf(format, args...)}
}

// Preconditionf returns a precondition error (exit 3) with a formatted message.
func Preconditionf(format string, args ...any) error {
	return &Error{Code: Precondition, Err: fmt.Errorf(format, args...)}
}

// Of returns the exit code for err: OK for nil, the code of the outermost
// *Error in its chain, Interrupted for a cancelled context, Internal otherwise.
func Of(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.Canceled) {
		return Interrupted
	}
	return Internal
}
