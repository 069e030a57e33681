package exitcode

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"nil is success", nil, OK},
		{"plain error is internal", errors.New("boom"), Internal},
		{"usage", Usagef("--bucket: required"), Usage},
		{"wrapped precondition", fmt.Errorf("step preflight: %w", Preconditionf("no cluster")), Precondition},
		{"cancelled context", fmt.Errorf("step snapshot-save: %w", context.Canceled), Interrupted},
		{"explicit code wins over cancellation", New(ManualAction, context.Canceled), ManualAction},
		{"joined keeps the first classified", errors.Join(New(Restored, errors.New("a")), errors.New("b")), Restored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Of(tt.err); got != tt.want {
				t.Errorf("Of(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

func TestNewNil(t *testing.T) {
	if err := New(Usage, nil); err != nil {
		t.Fatalf("New(Usage, nil) = %v, want nil", err)
	}
}

func TestTableIsComplete(t *testing.T) {
	seen := map[Code]bool{}
	for _, row := range Table {
		if seen[row.Code] {
			t.Fatalf("code %d listed twice", row.Code)
		}
		seen[row.Code] = true
	}
	for _, c := range []Code{OK, Internal, Usage, Precondition, Restored, ManualAction, Partial, Unusable, KeyMismatch, Interrupted} {
		if !seen[c] {
			t.Errorf("code %d missing from Table", c)
		}
	}
}
