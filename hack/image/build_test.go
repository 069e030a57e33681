package main

import (
	"archive/tar"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

func testInputs() Inputs {
	return Inputs{
		Binary:   []byte("\x7fELF not really"),
		CACerts:  []byte("-----BEGIN CERTIFICATE-----\n"),
		Created:  time.Unix(1764633600, 0),
		Version:  "v0.0.0-test",
		Revision: "0123456789abcdef0123456789abcdef01234567",
		Source:   "https://github.com/hcpsnap/hcpsnap",
		Arch:     "amd64",
	}
}

// TestBuildIsReproducible builds and writes the image twice from the same inputs into different folders, at
// different wall-clock times, and expects one digest from the builds, both layouts and both tarballs; a change of
// any input changes it.
func TestBuildIsReproducible(t *testing.T) {
	write := func(in Inputs) string {
		t.Helper()
		img, err := Build(in)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		out := Outputs{Layout: filepath.Join(dir, "oci"), Tarball: filepath.Join(dir, "image.tar"), Tag: "hcpsnap:" + in.Version}
		d, err := Write(img, out)
		if err != nil {
			t.Fatal(err)
		}
		tag, _ := name.NewTag(out.Tag)
		if err := SameContent(img, out.Tarball, tag); err != nil {
			t.Error(err)
		}
		if ld, err := LayoutDigest(out.Layout); err != nil || ld != d {
			t.Errorf("layout's image is %s (%v), built %s", ld, err, d)
		}
		return d.String()
	}
	first := write(testInputs())
	time.Sleep(1100 * time.Millisecond) // a build that read the clock would now differ
	if second := write(testInputs()); second != first {
		t.Fatalf("two builds of the same inputs: %s and %s", first, second)
	}
	changed := map[string]func(*Inputs){
		"binary":  func(in *Inputs) { in.Binary = append(in.Binary, '!') },
		"certs":   func(in *Inputs) { in.CACerts = append(in.CACerts, '!') },
		"created": func(in *Inputs) { in.Created = in.Created.Add(time.Second) },
		"version": func(in *Inputs) { in.Version = "v0.0.1" },
	}
	for what, change := range changed {
		t.Run(what, func(t *testing.T) {
			in := testInputs()
			change(&in)
			if d := write(in); d == first {
				t.Errorf("changing the %s kept digest %s", what, d)
			}
		})
	}
}

// TestImageContent reads the layer back: only the expected entries, in order, owned by root, with the fixed time and
// modes, and the config runs /hcpsnap as UID 65532.
func TestImageContent(t *testing.T) {
	in := testInputs()
	img, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := []struct {
		name string
		mode int64
	}{
		{"etc/", 0o755}, {"etc/group", 0o644}, {"etc/passwd", 0o644}, {"etc/ssl/", 0o755}, {"etc/ssl/certs/", 0o755},
		{"etc/ssl/certs/ca-certificates.crt", 0o644}, {"hcpsnap", 0o755}, {"tmp/", 0o1777},
	}
	tr := tar.NewReader(rc)
	for i := 0; ; i++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if i != len(want) {
				t.Errorf("%d entries, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) {
			t.Fatalf("unexpected entry %s", h.Name)
		}
		if h.Name != want[i].name || h.Mode != want[i].mode || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(in.Created) {
			t.Errorf("entry %d: %s mode %o owner %d:%d time %s; want %s mode %o owner 0:0 time %s",
				i, h.Name, h.Mode, h.Uid, h.Gid, h.ModTime, want[i].name, want[i].mode, in.Created)
		}
		if h.Name == "hcpsnap" {
			data, _ := io.ReadAll(tr)
			if string(data) != string(in.Binary) {
				t.Errorf("hcpsnap holds %q", data)
			}
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/hcpsnap" || cf.Config.User != "65532" {
		t.Errorf("entrypoint %q user %q", cf.Config.Entrypoint, cf.Config.User)
	}
	if cf.Config.Labels["org.opencontainers.image.revision"] != in.Revision || !cf.Created.Time.Equal(in.Created) {
		t.Errorf("labels %v created %s", cf.Config.Labels, cf.Created)
	}
}

// TestBuildRefusesEmptyInputs: a missing binary or bundle is an error, not an image without them.
func TestBuildRefusesEmptyInputs(t *testing.T) {
	in := testInputs()
	in.Binary = nil
	if _, err := Build(in); err == nil {
		t.Error("built an image without a binary")
	}
	in = testInputs()
	in.CACerts = nil
	if _, err := Build(in); err == nil {
		t.Error("built an image without CA certificates")
	}
}

// TestSameContentRefusesAnotherImage: the tarball check fails when the tarball holds another image.
func TestSameContentRefusesAnotherImage(t *testing.T) {
	a, err := Build(testInputs())
	if err != nil {
		t.Fatal(err)
	}
	in := testInputs()
	in.Binary = []byte("another binary")
	b, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := Outputs{Layout: filepath.Join(dir, "oci"), Tarball: filepath.Join(dir, "image.tar"), Tag: "hcpsnap:test"}
	if _, err := Write(b, out); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(out.Tag)
	if err := SameContent(a, out.Tarball, tag); err == nil {
		t.Error("a tarball of another image passed")
	}
}
