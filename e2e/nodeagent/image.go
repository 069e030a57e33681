package nodeagent

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	corev1 "k8s.io/api/core/v1"
)

// digestRef matches an image reference pinned by digest, whatever its registry and repository: the agent has no
// registry and finds such an image by its manifest digest in its OCI layouts.
var digestRef = regexp.MustCompile(`@(sha256:[0-9a-f]{64})$`)

// imageDigest returns the manifest digest of an image reference of the form <anything>@sha256:<hex>.
func imageDigest(ref string) (v1.Hash, bool) {
	m := digestRef.FindStringSubmatch(ref)
	if m == nil {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(m[1])
	return h, err == nil
}

// containerImage is an image found in a layout and unpacked: its root file system on the host and its config.
type containerImage struct {
	Digest v1.Hash
	// RootFS is the unpacked root file system, StateDir/images/<hex>/rootfs. Nothing writes to it after the
	// unpacking: every sandbox lays an overlay over it.
	RootFS string
	Config v1.Config
}

// imageStore finds digest-pinned images in OCI image layouts and unpacks each digest once under dir.
type imageStore struct {
	layouts []string
	dir     string

	mu     sync.Mutex
	images map[v1.Hash]*containerImage
}

// lookup returns the unpacked image of ref, or nil when ref is not pinned by digest or no layout holds that
// digest: such a container runs host binaries, as before images existed. A layout that does not exist (not built
// yet) holds nothing.
func (s *imageStore) lookup(ref string) (*containerImage, error) {
	digest, ok := imageDigest(ref)
	if !ok || s == nil || len(s.layouts) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if img, ok := s.images[digest]; ok {
		return img, nil
	}
	img, err := findImage(s.layouts, digest)
	if err != nil || img == nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", digest, err)
	}
	dir := filepath.Join(s.dir, digest.Hex)
	rootfs := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(filepath.Join(dir, "complete")); err != nil {
		if err := unpackImage(img, dir); err != nil {
			return nil, fmt.Errorf("image %s: unpack: %w", digest, err)
		}
	}
	ci := &containerImage{Digest: digest, RootFS: rootfs, Config: cf.Config}
	if s.images == nil {
		s.images = map[v1.Hash]*containerImage{}
	}
	s.images[digest] = ci
	return ci, nil
}

// findImage returns the image whose manifest has the digest, from the first layout that lists it, or nil.
func findImage(layouts []string, digest v1.Hash) (v1.Image, error) {
	for _, dir := range layouts {
		if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
			continue
		}
		p, err := layout.FromPath(dir)
		if err != nil {
			return nil, fmt.Errorf("layout %s: %w", dir, err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("layout %s: %w", dir, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("layout %s: %w", dir, err)
		}
		for _, d := range m.Manifests {
			if d.Digest == digest && d.MediaType.IsImage() {
				img, err := idx.Image(digest)
				if err != nil {
					return nil, fmt.Errorf("layout %s: %w", dir, err)
				}
				return img, nil
			}
		}
	}
	return nil, nil
}

// unpackImage extracts the layers of img in order into dir/rootfs, through a temporary folder renamed at the end,
// and marks dir complete: an unpacking cut short is started again.
func unpackImage(img v1.Image, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "rootfs.tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		err = unpackLayer(rc, tmp)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	if err := os.Rename(tmp, filepath.Join(dir, "rootfs")); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644)
}

// unpackLayer extracts one layer's tar into root: folders, regular files, symbolic and hard links, with their modes,
// owners and times. A whiteout (a deletion by a later layer) is refused, as is any path that leaves root or passes
// through a symbolic link: the agent runs images built by this repository, which have neither.
func unpackLayer(r io.Reader, root string) error {
	tr := tar.NewReader(r)
	type dirTime struct {
		path string
		t    time.Time
	}
	var dirs []dirTime
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rel, err := layerPath(h.Name)
		if err != nil {
			return err
		}
		if rel == "." {
			continue
		}
		if strings.HasPrefix(filepath.Base(rel), ".wh.") {
			return fmt.Errorf("%s: whiteouts are not supported", h.Name)
		}
		if err := noSymlinkBelow(root, filepath.Dir(rel)); err != nil {
			return err
		}
		target := filepath.Join(root, rel)
		mode := os.FileMode(h.Mode)&os.ModePerm | tarModeBits(h.Mode)
		switch h.Typeflag {
		case tar.TypeDir:
			// A folder that exists as a symbolic link would have its mode set on the link's target.
			if err := noSymlinkBelow(root, rel); err != nil {
				return err
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, dirTime{target, h.ModTime})
		case tar.TypeReg:
			if err := os.RemoveAll(target); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.RemoveAll(target); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
			if err := os.Lchown(target, h.Uid, h.Gid); err != nil {
				return err
			}
			continue
		case tar.TypeLink:
			src, err := layerPath(h.Linkname)
			if err != nil {
				return err
			}
			if err := noSymlinkBelow(root, src); err != nil {
				return err
			}
			if err := os.RemoveAll(target); err != nil {
				return err
			}
			if err := os.Link(filepath.Join(root, src), target); err != nil {
				return err
			}
			continue
		default:
			return fmt.Errorf("%s: entry type %q is not supported", h.Name, h.Typeflag)
		}
		if err := os.Lchown(target, h.Uid, h.Gid); err != nil {
			return err
		}
		// After chown, which clears the set-ID bits.
		if err := os.Chmod(target, mode); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if err := os.Chtimes(target, h.ModTime, h.ModTime); err != nil {
				return err
			}
		}
	}
	// A folder's time last, once nothing is created in it any more.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t); err != nil {
			return err
		}
	}
	return nil
}

// tarModeBits converts the set-user-ID, set-group-ID and sticky bits of a tar mode to os.FileMode.
func tarModeBits(m int64) os.FileMode {
	var out os.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

// layerPath cleans the name of a layer entry into a path relative to the root, refusing one that leaves it.
func layerPath(name string) (string, error) {
	rel := filepath.Clean(strings.TrimLeft(name, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s: path leaves the root file system", name)
	}
	return rel, nil
}

// noSymlinkBelow checks that no existing component of rel below root is a symbolic link, so that writing at
// root/rel stays inside root.
func noSymlinkBelow(root, rel string) error {
	p := root
	for _, part := range strings.Split(filepath.Clean(rel), "/") {
		if part == "." || part == "" {
			continue
		}
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s: path passes through a symbolic link, which is not supported", rel)
		}
	}
	return nil
}

// imageCommand applies Kubernetes' rules to a container of an image: no command and no args run the image's
// Entrypoint with its Cmd; args alone run the Entrypoint with the args; a command runs with the args and ignores the
// image's Entrypoint and Cmd.
func imageCommand(c *corev1.Container, cfg v1.Config) []string {
	switch {
	case len(c.Command) > 0:
		return append(append([]string{}, c.Command...), c.Args...)
	case len(c.Args) > 0:
		return append(append([]string{}, cfg.Entrypoint...), c.Args...)
	default:
		return append(append([]string{}, cfg.Entrypoint...), cfg.Cmd...)
	}
}

// imageEnv turns the image's Env (NAME=value) into the base of a container's environment.
func imageEnv(cfg v1.Config) []envVar {
	var out []envVar
	for _, kv := range cfg.Env {
		name, value, ok := strings.Cut(kv, "=")
		if ok && name != "" {
			out = append(out, envVar{Name: name, Value: value})
		}
	}
	return out
}

// credentials are the user and groups a container's process runs as.
type credentials struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
}

// runAs computes the credentials of a container of an image as Kubernetes does: runAsUser and runAsGroup of the
// container, else of the pod, else the image's User (uid, uid:gid, or names looked up in the image's /etc/passwd and
// /etc/group); the primary group is the user's group in /etc/passwd (0 when not listed), and the supplementary groups
// are the pod's supplementalGroups and fsGroup. runAsNonRoot is enforced.
func runAs(pod *corev1.Pod, c *corev1.Container, imageUser string, rootfs string) (credentials, error) {
	var uid, gid *int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	var cred credentials
	userPart, groupPart, hasGroup := strings.Cut(imageUser, ":")
	switch {
	case uid != nil:
		cred.UID = uint32(*uid)
	case userPart == "":
		cred.UID = 0
	default:
		n, err := lookupID(rootfs, "etc/passwd", userPart)
		if err != nil {
			return credentials{}, fmt.Errorf("image user %q: %w", imageUser, err)
		}
		cred.UID = n
	}
	switch {
	case gid != nil:
		cred.GID = uint32(*gid)
	case hasGroup && uid == nil:
		n, err := lookupID(rootfs, "etc/group", groupPart)
		if err != nil {
			return credentials{}, fmt.Errorf("image user %q: %w", imageUser, err)
		}
		cred.GID = n
	default:
		cred.GID = primaryGroup(rootfs, cred.UID)
	}
	if psc := pod.Spec.SecurityContext; psc != nil {
		for _, g := range psc.SupplementalGroups {
			cred.Groups = append(cred.Groups, uint32(g))
		}
		if psc.FSGroup != nil {
			cred.Groups = append(cred.Groups, uint32(*psc.FSGroup))
		}
	}
	nonRoot := false
	if psc := pod.Spec.SecurityContext; psc != nil && psc.RunAsNonRoot != nil {
		nonRoot = *psc.RunAsNonRoot
	}
	if sc := c.SecurityContext; sc != nil && sc.RunAsNonRoot != nil {
		nonRoot = *sc.RunAsNonRoot
	}
	if nonRoot && cred.UID == 0 {
		return credentials{}, errors.New("runAsNonRoot is set and the container would run as root")
	}
	return cred, nil
}

// readOnlyRoot reports whether the container asks for a read-only root file system.
func readOnlyRoot(c *corev1.Container) bool {
	return c.SecurityContext != nil && c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem
}

// lookupID resolves a user or group given as a number or a name listed in the image's passwd or group file.
func lookupID(rootfs, file, name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	var found *uint32
	err := eachEntry(filepath.Join(rootfs, file), func(f []string) {
		if f[0] == name && found == nil {
			if n, err := strconv.ParseUint(f[2], 10, 32); err == nil {
				v := uint32(n)
				found = &v
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if found == nil {
		return 0, fmt.Errorf("%s is not in the image's /%s", name, file)
	}
	return *found, nil
}

// primaryGroup is the group of uid in the image's /etc/passwd, 0 when it is not listed.
func primaryGroup(rootfs string, uid uint32) uint32 {
	gid := uint32(0)
	done := false
	_ = eachEntry(filepath.Join(rootfs, "etc/passwd"), func(f []string) {
		if done || len(f) < 4 || f[2] != strconv.FormatUint(uint64(uid), 10) {
			return
		}
		if n, err := strconv.ParseUint(f[3], 10, 32); err == nil {
			gid, done = uint32(n), true
		}
	})
	return gid
}

// eachEntry calls f with the colon-separated fields of each line of a passwd or group file that has at least
// three.
func eachEntry(path string, f func([]string)) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if fields := strings.Split(sc.Text(), ":"); len(fields) >= 3 {
			f(fields)
		}
	}
	return sc.Err()
}
