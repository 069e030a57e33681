//go:build e2e

package etcdsnap

// These tests run real etcd servers of both lines hcpsnap supports (the
// binaries `make deps` builds into .cache/bin/etcd-<version>/) and compare the
// Scanner's status of their snapshots with what each line's etcdutl reports.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdDirs returns the folders of the etcd binaries of both lines, named by
// deps/versions.mk, under LOCALENV_BIN_DIR or the repository's .cache/bin. A
// missing binary fails the test: `make deps` builds them.
func etcdDirs(t *testing.T) map[string]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "deps", "versions.mk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	versions := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":=")
		if name = strings.TrimSpace(name); ok && (name == "ETCD_36_VERSION" || name == "ETCD_35_VERSION") {
			versions[name] = strings.TrimSpace(value)
		}
	}
	if len(versions) != 2 {
		t.Fatalf("deps/versions.mk names %d of the two etcd lines", len(versions))
	}
	binDir := os.Getenv("LOCALENV_BIN_DIR")
	switch {
	case binDir == "":
		binDir = filepath.Join(root, ".cache", "bin")
	case !filepath.IsAbs(binDir):
		binDir = filepath.Join(root, binDir)
	}
	dirs := map[string]string{}
	for _, v := range versions {
		dir := filepath.Join(binDir, "etcd-"+v)
		for _, bin := range []string{"etcd", "etcdctl", "etcdutl"} {
			if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
				t.Fatalf("%s of etcd %s is missing (%v): run `make deps`", bin, v, err)
			}
		}
		dirs[v] = dir
	}
	return dirs
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// etcdServer is one real etcd member on loopback.
type etcdServer struct {
	dir, url string
	cli      *clientv3.Client
}

func startEtcd(t *testing.T, dir string) *etcdServer {
	t.Helper()
	data := t.TempDir()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(filepath.Join(dir, "etcd"), "--data-dir", filepath.Join(data, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer,
		"--unsafe-no-fsync")
	logs, err := os.Create(filepath.Join(data, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = logs.Close() })
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := cli.Status(ctx, client); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("etcd in %s did not start: %v", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &etcdServer{dir: dir, url: client, cli: cli}
}

// etcdutlStatus is `etcdutl snapshot status -w json`.
type etcdutlStatus struct {
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int    `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
	Version   string `json:"version"`
}

func runEtcdutlStatus(t *testing.T, dir, file string) etcdutlStatus {
	t.Helper()
	out, err := exec.Command(filepath.Join(dir, "etcdutl"), "snapshot", "status", "-w", "json", file).Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status %s: %v", file, err)
	}
	var st etcdutlStatus
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("etcdutl snapshot status: %v: %s", err, out)
	}
	return st
}

// save takes `etcdctl snapshot save` of the server into a new file.
func (e *etcdServer) save(t *testing.T, name string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".db")
	if out, err := exec.Command(filepath.Join(e.dir, "etcdctl"), "--endpoints", e.url, "snapshot", "save", file).CombinedOutput(); err != nil {
		t.Fatalf("etcdctl snapshot save: %v: %s", err, out)
	}
	return file
}

// chunkReader returns the stream in pieces of random sizes, as a network does.
type chunkReader struct {
	r   io.Reader
	rnd *rand.Rand
}

func (c chunkReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), 1+c.rnd.IntN(70_000))])
}

// scanFile streams file through the Verifier and a Scanner, then asks the
// Scanner for the status with ranged reads of the file; it also returns the
// shape of the "key" bucket's rightmost path.
func scanFile(t *testing.T, file string) (Status, pathShape, int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := NewScanner()
	v := NewVerifier(chunkReader{f, rand.New(rand.NewPCG(1, 2))}, 0, "")
	if _, err := io.Copy(io.Discard, io.TeeReader(v, s)); err != nil {
		t.Fatalf("stream %s: %v", file, err)
	}
	reads := 0
	readAt := func(off, n int64) ([]byte, error) {
		reads++
		if n > int64(s.meta.pageSize) {
			t.Errorf("read of %d bytes, more than a page", n)
		}
		b := make([]byte, n)
		_, err := f.ReadAt(b, off)
		return b, err
	}
	st, err := s.Status(readAt)
	if err != nil {
		t.Fatalf("status of %s: %v", file, err)
	}
	n := reads
	return st, keyBucketShape(t, s, readAt), n
}

// pathShape describes the "key" bucket's tree along its rightmost path.
type pathShape struct {
	inline       bool
	depth        int   // pages from the bucket's root to its rightmost leaf
	leafOverflow int64 // pages of overflow of that leaf
}

func keyBucketShape(t *testing.T, s *Scanner, readAt func(off, n int64) ([]byte, error)) pathShape {
	t.Helper()
	r := &reader{readAt: readAt, pageSize: int64(s.meta.pageSize), total: int64(s.meta.pgid) * int64(s.meta.pageSize)}
	root, err := r.page(s.meta.root)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.bucket(root, keyBucket)
	if err != nil || p == nil {
		t.Fatalf("key bucket: %v", err)
	}
	shape := pathShape{inline: p.off%r.pageSize != 0, depth: 1}
	for p.branch {
		_, _, _, child, err := p.element(p.count - 1)
		if err != nil {
			t.Fatal(err)
		}
		if p, err = r.page(child); err != nil {
			t.Fatal(err)
		}
		shape.depth++
	}
	if !shape.inline {
		shape.leafOverflow = (p.end-p.off)/r.pageSize - 1
	}
	return shape
}

func TestScannerMatchesEtcdutl(t *testing.T) {
	dirs := etcdDirs(t)
	for version, dir := range dirs {
		t.Run(version, func(t *testing.T) {
			ctx := context.Background()
			e := startEtcd(t, dir)
			kv := e.cli.KV
			put := func(k, v string) int64 {
				t.Helper()
				resp, err := kv.Put(ctx, k, v)
				if err != nil {
					t.Fatal(err)
				}
				return resp.Header.Revision
			}
			del := func(k string, opts ...clientv3.OpOption) int64 {
				t.Helper()
				resp, err := kv.Delete(ctx, k, opts...)
				if err != nil {
					t.Fatal(err)
				}
				return resp.Header.Revision
			}
			compact := func(rev int64) {
				t.Helper()
				if _, err := kv.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
					t.Fatal(err)
				}
			}
			// fill writes n keys, 100 to a transaction (one main revision,
			// many sub revisions), with values of size bytes.
			fill := func(prefix string, n, size int) int64 {
				t.Helper()
				var rev int64
				val := strings.Repeat("v", size)
				for i := 0; i < n; i += 100 {
					var ops []clientv3.Op
					for j := i; j < min(n, i+100); j++ {
						ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/%07d", prefix, j), val))
					}
					resp, err := kv.Txn(ctx).Then(ops...).Commit()
					if err != nil {
						t.Fatal(err)
					}
					rev = resp.Header.Revision
				}
				return rev
			}

			type check struct {
				name  string
				file  string
				shape func(pathShape) string // "" when the shape is the one wanted
			}
			var checks []check
			snap := func(name string, shape func(pathShape) string) {
				checks = append(checks, check{name, e.save(t, name), shape})
			}

			snap("fresh server, empty key bucket", func(s pathShape) string {
				if !s.inline {
					return "key bucket not inline"
				}
				return ""
			})
			put("a", "1")
			put("b", "2")
			snap("two keys, inline key bucket", func(s pathShape) string {
				if !s.inline {
					return "key bucket not inline"
				}
				return ""
			})
			fill("small", 30_000, 300)
			for i := range 20 {
				put(fmt.Sprintf("big/%02d", i), strings.Repeat("B", 5000+i*1000))
			}
			del("small/0000", clientv3.WithPrefix())
			put("last-is-big", strings.Repeat("L", 40_000))
			snap("multi-level tree, overflow pages, deletes", func(s pathShape) string {
				if s.inline || s.depth < 3 || s.leafOverflow == 0 {
					return "want a tree of 3 levels or more with an overflowing rightmost leaf"
				}
				return ""
			})
			compact(put("before-compaction", "x"))
			snap("after a compaction", nil)
			rev := del("small/", clientv3.WithPrefix())
			snap("latest write a delete of many keys", nil)
			compact(rev)
			snap("latest write a delete, then compacted at it", nil)
			put("again", "1")
			rev = del("again")
			compact(rev)
			del("nothing-there") // no new revision
			snap("compacted at a delete of a single key", nil)

			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) {
					got, shape, reads := scanFile(t, c.file)
					want := runEtcdutlStatus(t, dir, c.file)
					t.Logf("etcdutl %+v; scanner %+v after %d reads; key bucket %+v", want, got, reads, shape)
					if reads > 2*shape.depth+6 {
						t.Errorf("%d reads for a key bucket %d pages deep", reads, shape.depth)
					}
					if got.Revision != want.Revision || got.TotalSize != want.TotalSize || got.Version != want.Version {
						t.Errorf("scanner %+v, etcdutl %s %+v", got, version, want)
					}
					if c.shape != nil {
						if msg := c.shape(shape); msg != "" {
							t.Errorf("the snapshot does not test what it should: %s (%+v)", msg, shape)
						}
					}
					// Every etcdutl line reads the same revision and size.
					for other, odir := range dirs {
						if other == version {
							continue
						}
						o := runEtcdutlStatus(t, odir, c.file)
						if o.Revision != got.Revision || o.TotalSize != got.TotalSize {
							t.Errorf("etcdutl %s: %+v, scanner %+v", other, o, got)
						}
					}
				})
			}
		})
	}
}
