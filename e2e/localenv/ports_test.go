package localenv

import (
	"slices"
	"testing"
)

func TestMergePorts(t *testing.T) {
	for _, tc := range []struct {
		current     string
		want        string
		wantMissing []int
	}{
		{"", "30250,32379,32380,36443,39000,39001", []int{30250, 32379, 32380, 36443, 39000, 39001}},
		{"30250,32379-32380,36443,39000-39001", "30250,32379-32380,36443,39000-39001", nil},
		{"1000-40000", "1000-40000", nil},
		{"32379-32380", "32379-32380,30250,36443,39000,39001", []int{30250, 36443, 39000, 39001}},
	} {
		got, missing := mergePorts(tc.current, fixedPorts)
		if got != tc.want || !slices.Equal(missing, tc.wantMissing) {
			t.Errorf("mergePorts(%q) = %q, %v; want %q, %v", tc.current, got, missing, tc.want, tc.wantMissing)
		}
	}
}
