package pullnode

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/hcpsnap/hcpsnap/management"
)

// The pod side of the protocol: what `hcpsnap node-files` runs in the pod.
// Nothing here writes: the target folder is mounted read-only.

// Listing is what `node-files list` prints as JSON: the complete folders of
// the target, and every other entry with why it is left alone.
type Listing struct {
	Folders []Folder  `json:"folders"`
	Skipped []Skipped `json:"skipped,omitempty"`
}

// Folder is one complete folder and its regular files.
type Folder struct {
	Name  string `json:"name"`
	Files []File `json:"files"`
}

// File is a regular file of a folder.
type File struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Skipped is an entry of the target folder that is not a complete folder.
type Skipped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Reasons for skipping an entry of the target folder.
const (
	ReasonPartial   = "in progress or failed (" + management.PartialSuffix + "): never read"
	ReasonNotFolder = "not a snapshot folder (its name is not a UTC timestamp)"
)

// maxNameLen bounds the names List reports and Pull accepts.
const maxNameLen = 255

// List reads the target folder dir: the complete folders (names that
// management.IsCompleteFolder accepts) with their regular files, oldest
// first. A .partial folder is never opened.
func List(dir string) (*Listing, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	l := &Listing{Folders: []Folder{}}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, management.PartialSuffix):
			l.Skipped = append(l.Skipped, Skipped{Name: name, Reason: ReasonPartial})
			continue
		case !e.IsDir() || !management.IsCompleteFolder(name):
			l.Skipped = append(l.Skipped, Skipped{Name: name, Reason: ReasonNotFolder})
			continue
		}
		files, err := os.ReadDir(path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		f := Folder{Name: name, Files: []File{}}
		for _, fe := range files {
			if !fe.Type().IsRegular() {
				continue
			}
			info, err := fe.Info()
			if err != nil {
				return nil, err
			}
			f.Files = append(f.Files, File{Name: fe.Name(), Size: info.Size()})
		}
		l.Folders = append(l.Folders, f)
	}
	sort.Slice(l.Folders, func(i, j int) bool { return l.Folders[i].Name < l.Folders[j].Name })
	return l, nil
}

// Cat writes n bytes of the regular file at file from offset off to w. The
// file must be a regular file inside a complete folder of root (no link
// followed out of it), so that the exec can read nothing else.
func Cat(w io.Writer, root, file string, off, n int64) error {
	if err := checkInside(root, file); err != nil {
		return err
	}
	if off < 0 || n < 0 {
		return fmt.Errorf("offset %d and length %d must not be negative", off, n)
	}
	// Neither the folder nor the file may be a link out of the target.
	for _, p := range []string{path.Dir(file), file} {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link", p)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", file)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	_, err = io.Copy(w, io.LimitReader(f, n))
	return err
}

// checkInside checks that file is root/<complete folder>/<file name>.
func checkInside(root, file string) error {
	rel, ok := strings.CutPrefix(file, root+"/")
	parts := strings.Split(rel, "/")
	if !ok || path.Clean(file) != file || len(parts) != 2 || !management.IsCompleteFolder(parts[0]) || !validFileName(parts[1]) {
		return errors.New("the file must be <target>/<complete folder>/<file name>")
	}
	return nil
}

// fileName is what a file of a complete folder may be called: the names
// cluster-backup.sh gives, and plain names besides.
var fileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:+-]*$`)

func validFileName(name string) bool { return len(name) <= maxNameLen && fileName.MatchString(name) }

// The files of a complete folder that Pull copies: what cluster-backup.sh
// names snapshot_<time>.db and static_kuberesources_<time>.tar.gz.
var (
	snapshotFile = regexp.MustCompile(`^snapshot_[A-Za-z0-9._:+-]+\.db$`)
	staticFile   = regexp.MustCompile(`^static_kuberesources_[A-Za-z0-9._:+-]+\.tar\.gz$`)
)

// pick returns the folder's one snapshot and one static resources archive,
// or why the folder cannot be copied.
func pick(f Folder) (snap, static File, reason string) {
	var snaps, statics []File
	for _, fl := range f.Files {
		if !validFileName(fl.Name) {
			continue
		}
		switch {
		case snapshotFile.MatchString(fl.Name):
			snaps = append(snaps, fl)
		case staticFile.MatchString(fl.Name):
			statics = append(statics, fl)
		}
	}
	switch {
	case len(snaps) == 0:
		return snap, static, "no snapshot_<time>.db in the folder"
	case len(snaps) > 1:
		return snap, static, fmt.Sprintf("%d snapshot_<time>.db files in the folder, want one", len(snaps))
	case len(statics) == 0:
		return snap, static, "no static_kuberesources_<time>.tar.gz in the folder"
	case len(statics) > 1:
		return snap, static, fmt.Sprintf("%d static_kuberesources_<time>.tar.gz files in the folder, want one", len(statics))
	}
	return snaps[0], statics[0], ""
}
