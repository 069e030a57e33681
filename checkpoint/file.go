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

	"github.com/hcpsnap/hcpsnap/internal/fsutil"
)

// Dir returns the folder for run files: $HCPSNAP_STATE_DIR, else
// $XDG_STATE_HOME/hcpsnap/runs, else ~/.local/state/hcpsnap/runs.
func Dir() (string, error) {
	if d := os.Getenv("HCPSNAP_STATE_DIR"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "hcpsnap", "runs"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state folder: set HCPSNAP_STATE_DIR (%w)", err)
	}
	return filepath.Join(home, ".local", "state", "hcpsnap", "runs"), nil
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
		return fmt.Errorf("create state folder %s: %w", dir, err)
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
