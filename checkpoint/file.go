package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hcpsnap/hcpsnap/internal/fsutil"
)

// Dir returns the folder for run files: $HCPSNAP_STATE_DIR, else
// $XDG_STATE_HOME/hcpsnap/runs, else ~/.local/state/hcpsnap/runs when the home
// folder is writable, else hcpsnap/runs in the temp folder ($TMPDIR or /tmp).
// The last case is a container's: OpenShift runs an arbitrary UID with HOME=/
// on a read-only root file system, where only mounted volumes are writable.
func Dir() (string, error) {
	return dirFrom(os.Getenv, writable, os.TempDir())
}

// dirFrom is Dir with its environment, file system check and temp folder
// given.
func dirFrom(getenv func(string) string, canWrite func(string) bool, tempDir string) (string, error) {
	if d := getenv("HCPSNAP_STATE_DIR"); d != "" {
		return d, nil
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "hcpsnap", "runs"), nil
	}
	if home := getenv("HOME"); home != "" && filepath.Clean(home) != "/" && canWrite(home) {
		return filepath.Join(home, ".local", "state", "hcpsnap", "runs"), nil
	}
	if tempDir == "" {
		return "", errors.New("no state folder: set HCPSNAP_STATE_DIR to a writable folder")
	}
	return filepath.Join(tempDir, "hcpsnap", "runs"), nil
}

// writable reports whether the process may create files in dir: it exists,
// and neither its permissions nor a read-only mount refuse writing.
func writable(dir string) bool {
	return unix.Access(dir, unix.W_OK) == nil
}

// FileName is the run file's name: <namespace>_<name>_<runID>.json, so that a
// folder listing groups runs by cluster and sorts them by time.
func FileName(r *Run) string {
	return r.Cluster.Namespace + "_" + r.Cluster.Name + "_" + r.RunID + ".json"
}

// WriteFile writes the run atomically into dir with mode 0600: temp file,
// fsync, rename over the old file, fsync of the folder. A crash leaves
// either the old or the new run file, never a torn one.
func WriteFile(dir string, r *Run) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state folder %s: %w (set HCPSNAP_STATE_DIR or --state-dir to a writable folder)", dir, err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, FileName(r)), append(data, '\n'), 0o600)
}

// ReadFile reads one run file.
func ReadFile(path string) (*Run, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read run file: %w", err)
	}
	r, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("run file %s: %w", path, err)
	}
	return r, nil
}

// Latest returns the newest active (unfinished, not abandoned) run file of a cluster in dir, or
// (nil, nil) when there is none.
func Latest(dir string, c Cluster) (*Run, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	prefix := c.Namespace + "_" + c.Name + "_"
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for _, n := range names {
		r, err := ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		if r.Active() {
			return r, nil
		}
	}
	return nil, nil
}
