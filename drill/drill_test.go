package drill

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
)

// sourceSnapshot starts an etcd in-process, writes kvs and takes a
// snapshot through the maintenance API, as hcpsnap's stream does.
func sourceSnapshot(t *testing.T, kvs map[string][]byte) ([]byte, int64) {
	t.Helper()
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu.String()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rev int64
	for k, v := range kvs {
		resp, err := cli.Put(ctx, k, string(v))
		if err != nil {
			t.Fatal(err)
		}
		rev = max(rev, resp.Header.Revision)
	}
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	snap, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return snap, rev
}

// backupOf stores snap as a backup in a memory bucket.
func backupOf(snap []byte, rev int64) (*memStore, *restore.Backup) {
	st := &memStore{}
	sum := sha256.Sum256(snap)
	b := putBackup(st, snap, manifest.Etcd{Revision: rev, SHA256: hex.EncodeToString(snap[len(snap)-32:])}, hex.EncodeToString(sum[:]))
	return st, b
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("scratch folder %s holds %d entries after the drill, want none", dir, len(left))
	}
}

func TestRunGoodBackup(t *testing.T) {
	snap, rev := sourceSnapshot(t, map[string][]byte{
		"/kubernetes.io/namespaces/demo":      []byte("k8s\x00"),
		"/kubernetes.io/secrets/demo/token":   storedSecret(t, testKeyA, "key1", "demo", "token"),
		"/kubernetes.io/secrets/demo/token-2": storedSecret(t, testKeyA, "key1", "demo", "token-2"),
	})
	st, b := backupOf(snap, rev)
	scratch := t.TempDir()
	var phases []string
	res, err := Run(context.Background(), st, b, Options{ScratchDir: scratch, KeyBundle: bundleWithRole(testKeyA, manifest.RoleActiveKey),
		Progress: func(p string) { phases = append(phases, p) }})
	if err != nil {
		t.Fatalf("Run: %v; checks %+v", err, res.Checks)
	}
	emptyDir(t, scratch)
	if got := strings.Join(phases, ","); got != "check-space,fetch-snapshot,etcd-restore,start-etcd,inspect" {
		t.Errorf("phases = %s", got)
	}
	if res.Revision != rev+RevisionBump || res.Contents.Keys != 3 || res.Contents.Secrets.Decrypted != 2 {
		t.Errorf("revision %d (source %d), keys %d, decrypted %d", res.Revision, rev, res.Contents.Keys, res.Contents.Secrets.Decrypted)
	}
	for _, u := range []string{res.ClientURL, res.PeerURL} {
		if !strings.HasPrefix(u, "http://127.0.0.1:") {
			t.Errorf("etcd listened on %s, want loopback only", u)
		}
	}
	if res.Need.Bytes < uint64(2*len(snap)) || res.Need.Free == 0 {
		t.Errorf("need = %+v", res.Need)
	}

	// Another AES key in the bundle: the key does not match.
	_, err = Run(context.Background(), st, b, Options{ScratchDir: scratch, KeyBundle: bundleWithRole(testKeyB, manifest.RoleActiveKey)})
	if !errors.Is(err, ErrKeyMismatch) || !strings.Contains(err.Error(), "0 of 2") {
		t.Errorf("Run with another key: %v, want %v", err, ErrKeyMismatch)
	}
	emptyDir(t, scratch)
}

func TestRunUnusableBackups(t *testing.T) {
	snap, rev := sourceSnapshot(t, map[string][]byte{"/kubernetes.io/namespaces/demo": []byte("k8s\x00")})
	tests := []struct {
		name   string
		damage func(st *memStore, b *restore.Backup)
		want   error
		text   string
	}{
		{"missing snapshot", func(st *memStore, b *restore.Backup) { delete(st.objects, b.Manifest.Snapshot.Key) }, ErrUnusable, "missing"},
		{"truncated snapshot", func(st *memStore, b *restore.Backup) {
			k := b.Manifest.Snapshot.Key
			st.objects[k] = st.objects[k][:len(st.objects[k])/2]
			b.Manifest.Snapshot.Size = int64(len(st.objects[k]))
		}, ErrUnusable, "etcd's trailing SHA-256"},
		{"a flipped byte", func(st *memStore, b *restore.Backup) {
			k := b.Manifest.Snapshot.Key
			v := append([]byte(nil), st.objects[k]...)
			v[len(v)/2] ^= 0xff
			st.objects[k] = v
		}, ErrUnusable, "corrupt"},
		{"another snapshot than the manifest's", func(st *memStore, b *restore.Backup) {
			b.Manifest.Etcd.Revision++
		}, ErrUnusable, "revision"},
		{"not enough space", nil, ErrNoSpace, "pass --scratch-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, b := backupOf(snap, rev)
			opts := Options{ScratchDir: t.TempDir()}
			if tt.damage != nil {
				tt.damage(st, b)
			} else {
				opts.freeSpace = func(string) (uint64, error) { return 1 << 20, nil }
			}
			_, err := Run(context.Background(), st, b, opts)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Run = %v, want %v with %q", err, tt.want, tt.text)
			}
			emptyDir(t, opts.ScratchDir)
		})
	}
}

// TestRunInterruptedRemovesScratch cancels the drill (as SIGINT does) in
// each phase: the scratch folder must be gone and the error must be the
// cancellation, not a verdict on the backup.
func TestRunInterruptedRemovesScratch(t *testing.T) {
	snap, rev := sourceSnapshot(t, map[string][]byte{"/kubernetes.io/namespaces/demo": []byte("k8s\x00")})
	for _, at := range []string{"mid-stream", "etcd-restore", "start-etcd", "inspect"} {
		t.Run(at, func(t *testing.T) {
			st, b := backupOf(snap, rev)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			scratch := t.TempDir()
			var sawScratch bool
			opts := Options{ScratchDir: scratch, Progress: func(p string) {
				if p == at {
					entries, _ := os.ReadDir(scratch)
					sawScratch = len(entries) == 1
					cancel()
				}
			}}
			if at == "mid-stream" {
				st.onRead = func() {
					entries, _ := filepath.Glob(filepath.Join(scratch, "*", "snapshot.db"))
					sawScratch = len(entries) == 1
					cancel()
				}
			}
			_, err := Run(ctx, st, b, opts)
			if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnusable) {
				t.Errorf("Run = %v, want the cancellation only", err)
			}
			if !sawScratch {
				t.Error("the scratch folder did not exist when the drill was cancelled: the test proves nothing")
			}
			emptyDir(t, scratch)
		})
	}
}

func TestEstimate(t *testing.T) {
	n := Estimate(&manifest.Manifest{Snapshot: manifest.Object{Size: 1 << 30}})
	if n.Bytes < 2<<30+walPrealloc || n.Duration < 20*time.Second {
		t.Errorf("Estimate(1 GiB) = %+v", n)
	}
}
