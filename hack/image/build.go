package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// UID is the image's user: not root, and not a UID that a host's users are likely to have.
	UID = 65532
	// userName names UID in /etc/passwd.
	userName = "hcpsnap"
	// binaryPath is where the binary lives in the image, and the image's entrypoint.
	binaryPath = "/hcpsnap"
	// caPath is where Go's crypto/x509 looks first on Linux, and where Debian's ca-certificates puts the bundle.
	caPath = "/etc/ssl/certs/ca-certificates.crt"
	// imagePath is the PATH of the image; it has no folder of programs, but tools that look PATH up expect one.
	imagePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Inputs is everything an image is made of: two builds from equal inputs give the same image, byte for byte.
type Inputs struct {
	// Binary is the static hcpsnap binary.
	Binary []byte
	// CACerts is the PEM bundle of trusted CA certificates.
	CACerts []byte
	// Created is the time of every file and of the image: the commit's time (SOURCE_DATE_EPOCH).
	Created time.Time
	// Version, Revision and Source are the OCI labels org.opencontainers.image.{version,revision,source}.
	Version, Revision, Source string
	// Arch is the image's architecture (GOARCH).
	Arch string
}

// validate checks the inputs without I/O.
func (in Inputs) validate() error {
	var errs []error
	if len(in.Binary) == 0 {
		errs = append(errs, errors.New("the binary is empty"))
	}
	if len(in.CACerts) == 0 {
		errs = append(errs, errors.New("the CA certificates are empty"))
	}
	if in.Version == "" || in.Revision == "" || in.Arch == "" {
		errs = append(errs, errors.New("version, revision and arch are required"))
	}
	return errors.Join(errs...)
}

// entry is one file or folder of the layer.
type entry struct {
	path string
	mode int64
	dir  bool
	data []byte
}

// entries lists the layer's content, folders included, sorted by path.
func entries(in Inputs) []entry {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:0:%s:/tmp:/sbin/nologin\n", userName, UID, userName)
	group := fmt.Sprintf("root:x:0:%s\n%s:x:%d:\n", userName, userName, UID)
	es := []entry{
		{path: "etc", mode: 0o755, dir: true},
		{path: "etc/group", mode: 0o644, data: []byte(group)},
		{path: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{path: "etc/ssl", mode: 0o755, dir: true},
		{path: "etc/ssl/certs", mode: 0o755, dir: true},
		{path: strings.TrimPrefix(caPath, "/"), mode: 0o644, data: in.CACerts},
		{path: strings.TrimPrefix(binaryPath, "/"), mode: 0o755, data: in.Binary},
		{path: "tmp", mode: 0o1777, dir: true},
	}
	sort.Slice(es, func(i, j int) bool { return es[i].path < es[j].path })
	return es
}

// layerTar writes the layer's uncompressed tar: every entry owned by 0:0 with the time of the inputs, in the USTAR
// format (no access or change times, no PAX records), so that nothing of the build machine enters it.
func layerTar(in Inputs) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := in.Created.UTC().Truncate(time.Second)
	for _, e := range entries(in) {
		h := &tar.Header{
			Name: e.path, Mode: e.mode, ModTime: mtime, Format: tar.FormatUSTAR,
			Typeflag: tar.TypeReg, Size: int64(len(e.data)), Uname: "root", Gname: "root",
		}
		if e.dir {
			h.Name, h.Typeflag, h.Size = e.path+"/", tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.path, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Build makes the image. It does no I/O.
func Build(in Inputs) (v1.Image, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	data, err := layerTar(in)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.DefaultCompression))
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: in.Created.UTC().Truncate(time.Second)}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "hack/image: hcpsnap " + in.Version, Comment: "hcpsnap, CA certificates, passwd, group, /tmp"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.Architecture, cf.OS = in.Arch, "linux"
	labels := map[string]string{
		"org.opencontainers.image.source":   in.Source,
		"org.opencontainers.image.revision": in.Revision,
		"org.opencontainers.image.version":  in.Version,
		"org.opencontainers.image.created":  created.Format(time.RFC3339),
		"org.opencontainers.image.title":    "hcpsnap",
	}
	cf.Config = v1.Config{
		Entrypoint: []string{binaryPath},
		User:       fmt.Sprint(UID),
		WorkingDir: "/tmp",
		Env: []string{
			"PATH=" + imagePath,
			// HOME is where hcpsnap's state folder defaults to; /tmp is writable when the pod mounts an emptyDir
			// there, and hcpsnap falls back to the temp folder when HOME is not writable.
			"HOME=/tmp",
			"SSL_CERT_FILE=" + caPath,
		},
		Labels: labels,
	}
	return mutate.ConfigFile(img, cf)
}

// Outputs are where the image is written.
type Outputs struct {
	// Layout is the folder of the OCI image layout; it is replaced.
	Layout string
	// Tarball is the file `docker load` and `podman load` read; it is replaced.
	Tarball string
	// Tag is the repository and tag the tarball carries (hcpsnap:<version>).
	Tag string
}

// Write writes img as an OCI layout and a tarball, reads both back and checks that they hold img (see SameContent),
// and returns its manifest digest.
func Write(img v1.Image, out Outputs) (v1.Hash, error) {
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	tag, err := name.NewTag(out.Tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("tag %q: %w", out.Tag, err)
	}
	if err := os.RemoveAll(out.Layout); err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(out.Layout, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return v1.Hash{}, fmt.Errorf("write layout: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out.Tarball), 0o755); err != nil {
		return v1.Hash{}, err
	}
	tmp := out.Tarball + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return v1.Hash{}, fmt.Errorf("write tarball: %w", err)
	}
	if err := os.Rename(tmp, out.Tarball); err != nil {
		return v1.Hash{}, err
	}
	fromLayout, err := LayoutDigest(out.Layout)
	if err != nil {
		return v1.Hash{}, err
	}
	if fromLayout != digest {
		return v1.Hash{}, fmt.Errorf("layout %s holds %s, built %s", out.Layout, fromLayout, digest)
	}
	if err := SameContent(img, out.Tarball, tag); err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// SameContent checks that the tarball holds img: the same config (its digest is the image ID that `docker load`
// prints) and the same compressed layers. The manifest digest cannot be compared: docker's save format stores no
// manifest, and a reader of it (go-containerregistry's tarball, docker, podman) makes a Docker schema 2 manifest of
// its own, while the layout keeps the OCI manifest whose digest is printed, pushed and pinned.
func SameContent(img v1.Image, tarPath string, tag name.Tag) error {
	loaded, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		return fmt.Errorf("read tarball back: %w", err)
	}
	want, err := img.ConfigName()
	if err != nil {
		return err
	}
	got, err := loaded.ConfigName()
	if err != nil {
		return fmt.Errorf("read tarball back: %w", err)
	}
	if got != want {
		return fmt.Errorf("tarball %s: image ID %s, built %s", tarPath, got, want)
	}
	wantLayers, err := img.Layers()
	if err != nil {
		return err
	}
	gotLayers, err := loaded.Layers()
	if err != nil {
		return fmt.Errorf("read tarball back: %w", err)
	}
	if len(gotLayers) != len(wantLayers) {
		return fmt.Errorf("tarball %s: %d layers, built %d", tarPath, len(gotLayers), len(wantLayers))
	}
	for i := range wantLayers {
		w, err := wantLayers[i].Digest()
		if err != nil {
			return err
		}
		rc, err := gotLayers[i].Compressed()
		if err != nil {
			return fmt.Errorf("read tarball back: %w", err)
		}
		g, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("read tarball back: %w", err)
		}
		if g != w {
			return fmt.Errorf("tarball %s: layer %d is %s, built %s", tarPath, i, g, w)
		}
	}
	return nil
}

// LayoutDigest reads the layout back and returns the digest of its only image, after checking that image's layers
// against their digests.
func LayoutDigest(dir string) (v1.Hash, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read layout back: %w", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read layout back: %w", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read layout back: %w", err)
	}
	if len(m.Manifests) != 1 {
		return v1.Hash{}, fmt.Errorf("layout %s holds %d manifests, want 1", dir, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read layout back: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return v1.Hash{}, err
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return v1.Hash{}, err
		}
		if want, _ := l.Digest(); h != want {
			return v1.Hash{}, fmt.Errorf("layout %s: layer %s has digest %s", dir, want, h)
		}
	}
	return img.Digest()
}
