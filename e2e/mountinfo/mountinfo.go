// Package mountinfo reads the mount points of this process's mount namespace
// from /proc/self/mountinfo, for the parts of the local environment that
// mount (the node agent) and unmount (localenv down) the pods' volumes.
package mountinfo

import (
	"os"
	"strconv"
	"strings"
)

// Points returns the mount point of every line of /proc/self/mountinfo.
func Points() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return Parse(string(data)), nil
}

// Parse returns the mount point (the fifth field, its octal escapes such as
// \040 for a space decoded) of each line of a mountinfo text.
func Parse(mountinfo string) []string {
	var out []string
	for _, line := range strings.Split(mountinfo, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescape(fields[4]))
	}
	return out
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
