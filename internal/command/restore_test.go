package command

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

func TestRestoreRefusesARenderFromATerminal(t *testing.T) {
	tests := []struct {
		name     string
		filename string
		terminal bool
		want     string
	}{
		{"stdin is a terminal", "-", true, "no render on stdin, which is a terminal"},
		{"stdin is a pipe", "-", false, ""},
		{"a file, stdin a terminal", "render.yaml", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &RestoreOptions{Filename: tt.filename, In: strings.NewReader(""), terminal: func(io.Reader) bool { return tt.terminal }}
			err := o.checkInput()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one usage line containing %q", err, tt.want)
			}
		})
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) || isTerminal(strings.NewReader("")) {
		t.Fatal("a file or a reader taken for a terminal")
	}
	if tty, err := os.Open("/dev/tty"); err == nil {
		defer tty.Close()
		if !isTerminal(tty) {
			t.Error("/dev/tty not taken for a terminal")
		}
	}
}
