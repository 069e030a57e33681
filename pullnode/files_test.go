package pullnode

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListSkipsFoldersInProgressAndJunk(t *testing.T) {
	root := nodeFolder(t)
	// A link to a folder is not a complete folder, whatever its name.
	must(t, os.Symlink(filepath.Join(root, complete[0]), filepath.Join(root, "20260304T020000Z")))
	// A partial folder that cannot be opened must not fail the listing.
	must(t, os.Chmod(filepath.Join(root, "20260303T020000Z.partial"), 0))
	l, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range l.Folders {
		names = append(names, f.Name)
		if len(f.Files) != 2 {
			t.Errorf("%s: files %+v", f.Name, f.Files)
		}
	}
	if strings.Join(names, ",") != strings.Join(complete, ",") {
		t.Errorf("folders %q, want %q", names, complete)
	}
	reasons := map[string]string{}
	for _, s := range l.Skipped {
		reasons[s.Name] = s.Reason
	}
	want := map[string]string{"20260303T020000Z.partial": ReasonPartial, "notes.txt": ReasonNotFolder, "old-stuff": ReasonNotFolder, "20260304T020000Z": ReasonNotFolder}
	for n, r := range want {
		if reasons[n] != r {
			t.Errorf("%s: reason %q, want %q", n, reasons[n], r)
		}
	}
}

func TestCatReadsOnlyFilesOfCompleteFolders(t *testing.T) {
	root := nodeFolder(t)
	must(t, os.Symlink(filepath.Join(root, complete[0]), filepath.Join(root, "20260304T020000Z")))
	snap := filepath.Join(root, complete[0], "snapshot_2026-03-01_020000.db")
	var buf bytes.Buffer
	if err := Cat(&buf, root, snap, 100, 50); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), snapshotFixture(t)[100:150]) {
		t.Error("Cat returned other bytes than the file's range")
	}
	must(t, os.Symlink("/etc/hostname", filepath.Join(root, complete[1], "link")))
	for _, bad := range []string{
		filepath.Join(root, "20260304T020000Z", "snapshot_2026-03-01_020000.db"),
		filepath.Join(root, complete[1], "link"),
		filepath.Join(root, "20260303T020000Z.partial", "snapshot_2026-03-01_020000.db"),
		filepath.Join(root, "notes.txt"),
		filepath.Join(root, complete[0], "..", "notes.txt"),
		filepath.Join(root, complete[0]),
		"/etc/passwd",
		root + "/" + complete[0] + "/../../etc/passwd",
		filepath.Join(root, complete[0], ".hidden"),
	} {
		if err := Cat(&bytes.Buffer{}, root, bad, 0, 10); err == nil {
			t.Errorf("Cat(%q) read it", bad)
		}
	}
	if err := Cat(&bytes.Buffer{}, root, snap, -1, 10); err == nil {
		t.Error("Cat with a negative offset read")
	}
}

func TestPick(t *testing.T) {
	for _, tc := range []struct {
		files  []string
		reason string
	}{
		{files: []string{"snapshot_a.db", "static_kuberesources_a.tar.gz"}},
		{files: []string{"snapshot_a.db", "static_kuberesources_a.tar.gz", "README"}},
		{files: []string{"static_kuberesources_a.tar.gz"}, reason: "no snapshot_"},
		{files: []string{"snapshot_a.db"}, reason: "no static_kuberesources_"},
		{files: []string{"snapshot_a.db", "snapshot_b.db", "static_kuberesources_a.tar.gz"}, reason: "2 snapshot_"},
		{files: []string{"snapshot_a.db", "static_kuberesources_a.tar.gz", "static_kuberesources_b.tar.gz"}, reason: "2 static_"},
		{files: []string{"snapshot_a b.db", "static_kuberesources_a.tar.gz"}, reason: "no snapshot_"},
	} {
		f := Folder{Name: complete[0]}
		for _, n := range tc.files {
			f.Files = append(f.Files, File{Name: n, Size: 1})
		}
		_, _, reason := pick(f)
		if (reason == "") != (tc.reason == "") || !strings.Contains(reason, tc.reason) {
			t.Errorf("pick(%q) = %q, want %q", tc.files, reason, tc.reason)
		}
	}
}
