package mountinfo

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	text := "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n" +
		"37 35 98:0 / / rw - ext4 /dev/vda rw\n" +
		"short line\n"
	got := Parse(text)
	if want := []string{"/mnt/with space", "/"}; !slices.Equal(got, want) {
		t.Errorf("Parse = %q, want %q", got, want)
	}
}

func TestPointsHasRoot(t *testing.T) {
	points, err := Points()
	if err != nil {
		t.Skipf("no /proc/self/mountinfo: %v", err)
	}
	if !slices.Contains(points, "/") {
		t.Errorf("no / among %d mount points", len(points))
	}
}
