// Package shell quotes the commands hcpsnap prints for a person to copy and
// paste: the --dry-run runbook's commands and the hints in error messages.
// It is a leaf of the import graph, usable from every layer.
//
// Layer: plain helpers; it imports nothing of hcpsnap.
package shell

import "strings"

// safe reports whether c needs no quoting in a POSIX shell word.
func safe(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.ContainsRune("@%+=:,./_-", c)
}

// Quote returns s as one word of a POSIX shell: unchanged when every
// character is safe, else in single quotes (a single quote inside closes
// the quoted part, is escaped and opens it again). A value read from a
// cluster or a file, pasted into a terminal, is then one argument, never a
// second command.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, func(c rune) bool { return !safe(c) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join quotes every argument and joins them with spaces: a command line
// that runs args exactly.
func Join(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}
