package shell

import (
	"os/exec"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example", "example"},
		{"clusters-example", "clusters-example"},
		{"/var/lib/data/hcpsnap-20250101T000000Z-0a1b2c3d.db", "/var/lib/data/hcpsnap-20250101T000000Z-0a1b2c3d.db"},
		{"--replicas=3", "--replicas=3"},
		{"", "''"},
		{"a b", "'a b'"},
		{"x; rm -rf /", "'x; rm -rf /'"},
		{"it's", `'it'\''s'`},
		{"$(id)", "'$(id)'"},
		{"{.spec.pausedUntil}", "'{.spec.pausedUntil}'"},
		{"line\nbreak", "'line\nbreak'"},
	}
	for _, tt := range tests {
		if got := Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestJoinRoundTrip runs the joined line in a real POSIX shell and checks
// that it receives exactly the arguments.
func TestJoinRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	args := []string{"plain", "", "two words", "it's", `"double"`, "$HOME", "`id`", "a;b|c&d", "*", "tab\there", "new\nline", `back\slash`, "~user", "#comment"}
	out, err := exec.Command(sh, "-c", "set -- "+Join(args...)+`; for a in "$@"; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(got) != len(args) {
		t.Fatalf("shell saw %d arguments %q, want %d", len(got), got, len(args))
	}
	for i := range args {
		if got[i] != args[i] {
			t.Errorf("argument %d: shell saw %q, want %q", i, got[i], args[i])
		}
	}
}
