package nodeagent

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
)

func TestImageDigest(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	tests := []struct {
		ref  string
		want string
	}{
		{"registry.example/hcpsnap@sha256:" + hex, "sha256:" + hex},
		{"quay.io/org/hcpsnap:v1@sha256:" + hex, "sha256:" + hex},
		{"hcpsnap:v1", ""},
		{"registry.example/hcpsnap@sha256:" + hex[:63], ""},
		{"registry.example/hcpsnap@sha256:" + strings.ToUpper(hex), ""},
		{"", ""},
	}
	for _, tt := range tests {
		d, ok := imageDigest(tt.ref)
		if got := map[bool]string{true: d.String(), false: ""}[ok]; got != tt.want {
			t.Errorf("imageDigest(%q) = %q, want %q", tt.ref, got, tt.want)
		}
	}
}

// TestImageCommand checks Kubernetes' rules for command and args against an image's Entrypoint and Cmd.
func TestImageCommand(t *testing.T) {
	cfg := v1.Config{Entrypoint: []string{"/hcpsnap"}, Cmd: []string{"--help"}}
	tests := []struct {
		name          string
		command, args []string
		want          []string
	}{
		{"image defaults", nil, nil, []string{"/hcpsnap", "--help"}},
		{"args replace Cmd", nil, []string{"backup", "--dry-run"}, []string{"/hcpsnap", "backup", "--dry-run"}},
		{"command replaces both", []string{"/bin/true"}, nil, []string{"/bin/true"}},
		{"command and args", []string{"/hcpsnap"}, []string{"version"}, []string{"/hcpsnap", "version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := imageCommand(&corev1.Container{Command: tt.command, Args: tt.args}, cfg)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestImageEnvMerge: the image's Env is the base, the default PATH only fills a missing PATH, the in-cluster
// variables follow, and the container's env replaces any of them.
func TestImageEnvMerge(t *testing.T) {
	service, err := serviceEnv("https://127.0.0.1:36443")
	if err != nil {
		t.Fatal(err)
	}
	img := &containerImage{Config: v1.Config{Env: []string{"PATH=/bin", "HOME=/tmp", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}}}
	pod := testPod("job", corev1.Container{Name: "c"})
	c := corev1.Container{Name: "c", Env: []corev1.EnvVar{{Name: "HOME", Value: "/home"}, {Name: "X", Value: "$(HOME)/x"}}}
	got, err := containerEnv(pod, &c, baseEnv(img, service), "127.0.1.5", hostIP, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []envVar{
		{"PATH", "/bin"}, {"HOME", "/home"}, {"SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"},
		{"KUBERNETES_SERVICE_HOST", "127.0.0.1"}, {"KUBERNETES_SERVICE_PORT", "36443"}, {"HOSTNAME", "job"},
		{"X", "/home/x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env\n got %v\nwant %v", got, want)
	}
	noPath := baseEnv(&containerImage{Config: v1.Config{Env: []string{"A=b"}}}, nil)
	if !reflect.DeepEqual(noPath, []envVar{{"PATH", defaultPath}, {"A", "b"}}) {
		t.Errorf("an image without PATH: %v", noPath)
	}
}

func TestRunAs(t *testing.T) {
	rootfs := t.TempDir()
	writeFile(t, filepath.Join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/sbin/nologin\nhcpsnap:x:65532:0::/tmp:/sbin/nologin\napp:x:1001:1002::/:/x\n", 0o644)
	writeFile(t, filepath.Join(rootfs, "etc/group"), "root:x:0:\napps:x:1002:\n", 0o644)
	i64 := func(v int64) *int64 { return &v }
	yes := true
	tests := []struct {
		name      string
		pod       *corev1.PodSecurityContext
		container *corev1.SecurityContext
		imageUser string
		want      credentials
		wantErr   bool
	}{
		{name: "image user, group from passwd", imageUser: "65532", want: credentials{UID: 65532, GID: 0}},
		{name: "image user by name", imageUser: "app", want: credentials{UID: 1001, GID: 1002}},
		{name: "image user and group by name", imageUser: "app:root", want: credentials{UID: 1001, GID: 0}},
		{name: "no image user is root", imageUser: "", want: credentials{}},
		{name: "pod runAsUser, arbitrary UID has group 0", pod: &corev1.PodSecurityContext{RunAsUser: i64(1000650000)},
			imageUser: "65532", want: credentials{UID: 1000650000, GID: 0}},
		{name: "container wins over pod", pod: &corev1.PodSecurityContext{RunAsUser: i64(5), RunAsGroup: i64(6)},
			container: &corev1.SecurityContext{RunAsUser: i64(1000650000), RunAsGroup: i64(0)},
			imageUser: "65532", want: credentials{UID: 1000650000, GID: 0}},
		{name: "supplemental groups and fsGroup", pod: &corev1.PodSecurityContext{SupplementalGroups: []int64{7}, FSGroup: i64(1000650000)},
			imageUser: "65532", want: credentials{UID: 65532, GID: 0, Groups: []uint32{7, 1000650000}}},
		{name: "runAsNonRoot refuses root", container: &corev1.SecurityContext{RunAsNonRoot: &yes}, imageUser: "0", wantErr: true},
		{name: "unknown user name", imageUser: "nobody", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := testPod("p")
			pod.Spec.SecurityContext = tt.pod
			got, err := runAs(pod, &corev1.Container{SecurityContext: tt.container}, tt.imageUser, rootfs)
			if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
				t.Errorf("runAs = %+v, %v; want %+v (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// tarEntry is one entry of a test layer.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	data       string
}

func testLayer(t *testing.T, entries []tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.data)),
			ModTime: time.Unix(1700000000, 0)}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testLayout writes an OCI layout holding one image made of layers and returns the layout and the image's digest.
func testLayout(t *testing.T, cfg v1.Config, layers ...v1.Layer) (string, v1.Hash) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dir, d
}

// TestImageStoreUnpacks finds an image by digest in the second of two layouts (the first does not exist), unpacks
// it with its modes, and unpacks it only once; a tag, or a digest no layout lists, is no image.
func TestImageStoreUnpacks(t *testing.T) {
	dir, digest := testLayout(t, v1.Config{Entrypoint: []string{"/app"}, User: "65532"}, testLayer(t, []tarEntry{
		{name: "app", typ: tar.TypeReg, mode: 0o755, data: "binary"},
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, data: "root:x:0:0::/:/x\n"},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		{name: "app2", typ: tar.TypeLink, link: "app"},
	}), testLayer(t, []tarEntry{{name: "etc/passwd", typ: tar.TypeReg, mode: 0o600, data: "second layer\n"}}))
	s := &imageStore{layouts: []string{filepath.Join(t.TempDir(), "missing"), dir}, dir: t.TempDir()}
	img, err := s.lookup("registry.example/hcpsnap@" + digest.String())
	if err != nil || img == nil {
		t.Fatalf("lookup: %v, %v", img, err)
	}
	if img.Config.User != "65532" || img.Config.Entrypoint[0] != "/app" {
		t.Errorf("config %+v", img.Config)
	}
	check := func(rel string, mode os.FileMode, content string) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(img.RootFS, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), mode)
		}
		if content != "" {
			if data, _ := os.ReadFile(filepath.Join(img.RootFS, rel)); string(data) != content {
				t.Errorf("%s holds %q, want %q", rel, data, content)
			}
		}
	}
	check("app", 0o755, "binary")
	check("app2", 0o755, "binary")
	check("etc/passwd", 0o600, "second layer\n")
	check("tmp", os.ModeDir|os.ModeSticky|0o777, "")
	check("bin", os.ModeSymlink|0o777, "")
	// A second lookup reuses the unpacked folder; so does a new store (a restarted agent) on the same folder.
	marker := filepath.Join(img.RootFS, "marker")
	writeFile(t, marker, "", 0o644)
	again := &imageStore{layouts: s.layouts, dir: s.dir}
	if img2, err := again.lookup("other.example/x@" + digest.String()); err != nil || img2.RootFS != img.RootFS {
		t.Fatalf("second lookup: %v, %v", img2, err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the image was unpacked again: %v", err)
	}
	for _, ref := range []string{"registry.example/hcpsnap:v1", "registry.example/hcpsnap@sha256:" + strings.Repeat("0", 64)} {
		if img, err := s.lookup(ref); img != nil || err != nil {
			t.Errorf("lookup(%q) = %v, %v; want no image", ref, img, err)
		}
	}
}

// TestUnpackRefuses: whiteouts, paths that leave the root, writes through a symbolic link and devices are errors,
// and nothing is written outside the root.
func TestUnpackRefuses(t *testing.T) {
	victim := t.TempDir()
	if err := os.Chmod(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := map[string][]tarEntry{
		"whiteout":           {{name: "etc/.wh.passwd", typ: tar.TypeReg, mode: 0o644}},
		"escape":             {{name: "../outside", typ: tar.TypeReg, mode: 0o644, data: "x"}},
		"through link":       {{name: "etc", typ: tar.TypeSymlink, link: victim}, {name: "etc/outside", typ: tar.TypeReg, mode: 0o644, data: "x"}},
		"device":             {{name: "dev/null", typ: tar.TypeChar, mode: 0o666}},
		"folder over a link": {{name: "etc", typ: tar.TypeSymlink, link: victim}, {name: "etc/", typ: tar.TypeDir, mode: 0o777}},
	}
	for name, entries := range tests {
		t.Run(name, func(t *testing.T) {
			dir, digest := testLayout(t, v1.Config{}, testLayer(t, entries))
			s := &imageStore{layouts: []string{dir}, dir: t.TempDir()}
			if img, err := s.lookup("r.example/x@" + digest.String()); err == nil {
				t.Errorf("unpacked %v", img)
			}
			for _, p := range []string{filepath.Join(s.dir, digest.Hex, "outside"), filepath.Join(victim, "outside")} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s was written outside the root", p)
				}
			}
			if fi, err := os.Stat(victim); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("the folder a link points to changed: %v, %v", fi.Mode(), err)
			}
		})
	}
}
