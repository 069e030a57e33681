package command

import (
	"io"
	"os"

	"github.com/mattn/go-isatty"
)

// isTerminal reports whether r is a terminal: a command that would read a
// person's answer or a piped document from it must not wait there silently.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func (o *BackupOptions) isTerminal() bool {
	if o.terminal != nil {
		return o.terminal(o.In)
	}
	return isTerminal(o.In)
}
