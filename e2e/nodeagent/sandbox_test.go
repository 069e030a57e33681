package nodeagent

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/hcpsnap/hcpsnap/e2e/mountinfo"
)

// fakeFS is an fsView over a set of paths (true for folders) with symbolic links between folders.
type fakeFS struct {
	paths map[string]bool
	links map[string]string
}

func (f fakeFS) resolve(p string) string {
	for link, target := range f.links {
		if within(p, link) {
			return filepath.Join(target, p[len(link):])
		}
	}
	return p
}

func (f fakeFS) stat(p string) (bool, bool) {
	isDir, ok := f.paths[f.resolve(p)]
	return ok, isDir
}

func TestPlanMount(t *testing.T) {
	host := fakeFS{
		paths: map[string]bool{
			"/": true, "/etc": true, "/etc/hosts": false, "/usr": true, "/usr/bin": true, "/var": true,
			"/var/lib": true, "/run": true, "/state/vol/tls": true, "/state/hosts": false, "/opt/etcdctl": false,
		},
		links: map[string]string{"/var/run": "/run"},
	}
	tests := []struct {
		name    string
		m       sandboxMount
		st      mountState
		want    []mountStep
		wantErr bool
	}{{
		name: "existing target is bound directly",
		m:    sandboxMount{Source: "/state/hosts", Target: "/etc/hosts", ReadOnly: true},
		want: []mountStep{{Op: opBind, Path: "/etc/hosts", Source: "/state/hosts", ReadOnly: true}},
	}, {
		name: "missing folder: overlay the nearest existing ancestor, then create and bind",
		m:    sandboxMount{Source: "/state/vol/tls", Target: "/etc/etcd/tls/client"},
		want: []mountStep{
			{Op: opOverlay, Path: "/etc"},
			{Op: opMkdir, Path: "/etc/etcd/tls/client"},
			{Op: opBind, Path: "/etc/etcd/tls/client", Source: "/state/vol/tls"},
		},
	}, {
		name: "missing file mount point is a file",
		m:    sandboxMount{Source: "/opt/etcdctl", Target: "/usr/bin/etcdctl", ReadOnly: true},
		want: []mountStep{
			{Op: opOverlay, Path: "/usr/bin"},
			{Op: opTouch, Path: "/usr/bin/etcdctl"},
			{Op: opBind, Path: "/usr/bin/etcdctl", Source: "/opt/etcdctl", ReadOnly: true},
		},
	}, {
		name: "ancestor already overlaid: no second overlay",
		m:    sandboxMount{Source: "/state/vol/tls", Target: "/etc/etcd/tls/server"},
		st:   mountState{overlays: []string{"/etc"}},
		want: []mountStep{
			{Op: opMkdir, Path: "/etc/etcd/tls/server"},
			{Op: opBind, Path: "/etc/etcd/tls/server", Source: "/state/vol/tls"},
		},
	}, {
		name: "ancestor inside a bound volume below our overlay gets its own overlay",
		m:    sandboxMount{Source: "/state/vol/tls", Target: "/usr/bin/sub/dir"},
		st:   mountState{overlays: []string{"/usr"}, binds: []string{"/usr/bin"}},
		want: []mountStep{
			{Op: opOverlay, Path: "/usr/bin"},
			{Op: opMkdir, Path: "/usr/bin/sub/dir"},
			{Op: opBind, Path: "/usr/bin/sub/dir", Source: "/state/vol/tls"},
		},
	}, {
		name: "symbolic links in the ancestor are resolved",
		m:    sandboxMount{Source: "/state/vol/tls", Target: "/var/run/secrets/kubernetes.io/serviceaccount"},
		want: []mountStep{
			{Op: opOverlay, Path: "/run"},
			{Op: opMkdir, Path: "/var/run/secrets/kubernetes.io/serviceaccount"},
			{Op: opBind, Path: "/var/run/secrets/kubernetes.io/serviceaccount", Source: "/state/vol/tls"},
		},
	}, {
		name:    "a missing top-level folder would need an overlay on /",
		m:       sandboxMount{Source: "/state/vol/tls", Target: "/data/x"},
		wantErr: true,
	}, {
		name:    "missing source",
		m:       sandboxMount{Source: "/nope", Target: "/etc/x"},
		wantErr: true,
	}, {
		name:    "folder on a file",
		m:       sandboxMount{Source: "/state/vol/tls", Target: "/etc/hosts"},
		wantErr: true,
	}, {
		name:    "parent is a file",
		m:       sandboxMount{Source: "/state/vol/tls", Target: "/etc/hosts/x"},
		wantErr: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planMount(tt.m, host, &tt.st)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan = %+v\nwant   %+v", got, tt.want)
			}
		})
	}
}

func TestSortMounts(t *testing.T) {
	in := []sandboxMount{{Target: "/a/b/c"}, {Target: "etc/hosts"}, {Target: "/a/b"}, {Target: "/z"}, {Target: "/a/b/"}}
	var got []string
	for _, m := range sortMounts(in) {
		got = append(got, m.Target)
	}
	want := []string{"/z", "/etc/hosts", "/a/b", "/a/b", "/a/b/c"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMountState(t *testing.T) {
	st := mountState{overlays: []string{"/etc", "/etc/a/b"}, binds: []string{"/etc/a"}}
	tests := map[string]bool{"/etc": true, "/etc/x": true, "/etc/a": false, "/etc/a/c": false, "/etc/a/b/d": true, "/usr": false, "/etcx": false}
	for dir, want := range tests {
		if got := st.writable(dir); got != want {
			t.Errorf("writable(%s) = %v, want %v", dir, got, want)
		}
	}
}

func TestOutermostBelow(t *testing.T) {
	text := "22 1 254:0 / / rw - ext4 /dev/vda rw\n" +
		"30 22 0:5 / /etc/resolv.conf rw - tmpfs x rw\n" +
		"31 22 0:6 / /etc/ssl rw - tmpfs x rw\n" +
		"32 31 0:7 / /etc/ssl/certs rw - tmpfs x rw\n" +
		"33 22 0:8 / /etc-other rw - tmpfs x rw\n" +
		"34 22 0:9 / /etc/with\\040space rw - tmpfs x rw\n" +
		"35 22 0:10 / /etc rw - tmpfs x rw\n"
	got := outermostBelow("/etc", mountinfo.Parse(text))
	want := []string{"/etc/resolv.conf", "/etc/ssl", "/etc/with space"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseSandboxArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantArgv []string
		wantErr  bool
	}{
		{"inline spec", []string{"--spec", `{"scratchDir":"/s"}`, "--", "sh", "-c", "exit 3"}, []string{"sh", "-c", "exit 3"}, false},
		{"equals form", []string{`--spec={"scratchDir":"/s"}`, "--", "true"}, []string{"true"}, false},
		{"no command", []string{"--spec", `{}`, "--"}, nil, true},
		{"no spec", []string{"--", "true"}, nil, true},
		{"no separator", []string{"--spec", `{}`}, nil, true},
		{"bad json", []string{"--spec", `{bad`, "--", "true"}, nil, true},
		{"unknown flag", []string{"--nope", "--", "true"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, argv, err := parseSandboxArgs(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (spec.ScratchDir != "/s" || !reflect.DeepEqual(argv, tt.wantArgv)) {
				t.Errorf("spec %+v argv %q", spec, argv)
			}
		})
	}
}
