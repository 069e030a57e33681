package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/hcpsnap/hcpsnap/internal/etcdsnap"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/restore"
)

// RevisionBump and MarkCompacted are what HyperShift's etcd-init passes to
// `etcdutl snapshot restore` (control-plane-operator v2/assets/etcd): the
// restored revision jumps by a billion so that no client watch ever sees
// the revision go back, and everything before it is marked compacted.
const (
	RevisionBump  = 1_000_000_000
	MarkCompacted = true
)

// The two ways a drill finds a backup wanting: the command maps them to
// exit codes (7 and 8).
var (
	// ErrUnusable: the snapshot is missing, truncated or not the one the
	// manifest describes, or etcd cannot restore or serve it.
	ErrUnusable = errors.New("backup unusable")
	// ErrKeyMismatch: the key bundle does not decrypt the stored Secrets,
	// or there is none for Secrets that need it.
	ErrKeyMismatch = errors.New("key does not match")
)

// Options configure one drill.
type Options struct {
	// ScratchDir is the folder under which a private scratch folder is made
	// and always removed.
	ScratchDir string
	// KeyBundle is the backup's key bundle; nil with NoKeyBundle saying why
	// when there is none to use.
	KeyBundle   []corev1.Secret
	NoKeyBundle string
	// Logger receives etcd's own messages (errors only, on stderr).
	Logger *zap.Logger
	// Progress, when set, is told of each phase as it starts.
	Progress func(phase string)
	// freeSpace overrides the free-space probe in tests.
	freeSpace func(dir string) (uint64, error)
}

// Need is what a drill of a backup takes, estimated before it starts.
type Need struct {
	// Bytes of scratch space: the snapshot copy, the restored database (a
	// copy of it) and the preallocated write-ahead log.
	Bytes uint64 `json:"bytes"`
	// Free bytes in the scratch folder's file system.
	Free uint64 `json:"free"`
	// Duration is a rough estimate: download at 50 MB/s, restore at
	// 200 MB/s, and ten seconds to start and read etcd.
	Duration time.Duration `json:"-"`
	// Seconds is Duration in seconds, for JSON.
	Seconds float64 `json:"seconds"`
}

// walPrealloc is the size etcd preallocates for a write-ahead log segment.
const walPrealloc = 64 << 20

// Estimate returns what a drill of m needs.
func Estimate(m *manifest.Manifest) Need {
	size := uint64(max(m.Snapshot.Size, 0))
	bytes := 2*size + walPrealloc
	bytes += bytes / 10
	d := time.Duration(float64(size)/50e6*float64(time.Second)) + time.Duration(float64(size)/200e6*float64(time.Second)) + 10*time.Second
	d = d.Round(time.Second)
	return Need{Bytes: bytes, Duration: d, Seconds: d.Seconds()}
}

// Check is one line of the drill's verdict.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// fail is the error class of a failed check.
	fail error
}

// Result is what a drill found.
type Result struct {
	Manifest string `json:"manifest"`
	Cluster  string `json:"cluster"`
	Need     Need   `json:"need"`
	// EtcdVersion is the etcd release whose code restored and served the data.
	EtcdVersion string `json:"etcdVersion"`
	// Revision is the restored etcd's revision, ExpectedRevision the
	// manifest's plus RevisionBump.
	Revision         int64     `json:"revision"`
	ExpectedRevision int64     `json:"expectedRevision"`
	ClientURL        string    `json:"clientURL,omitempty"`
	PeerURL          string    `json:"peerURL,omitempty"`
	Contents         *Contents `json:"contents,omitempty"`
	Checks           []Check   `json:"checks"`
	// Findings are facts worth a look that do not fail the drill (a Secret
	// stored without encryption, KMS data that cannot be checked offline).
	Findings []string `json:"findings,omitempty"`
	Duration float64  `json:"durationSeconds"`
}

// state is what the phases of one drill share.
type state struct {
	store   restore.Store
	backup  *restore.Backup
	opts    Options
	scratch string
	res     *Result
	etcd    *embed.Etcd
}

// phase is one step of the drill, named as the progress and errors say.
type phase struct {
	Name string
	Run  func(ctx context.Context, s *state) error
}

// phases are the drill's steps in order; the scratch folder and the
// embedded etcd are released after them whatever happened.
var phases = []phase{
	{"check-space", checkSpace},
	{"fetch-snapshot", fetchSnapshot},
	{"etcd-restore", restoreSnapshot},
	{"start-etcd", startEtcd},
	{"inspect", inspectEtcd},
}

// Run drills the backup b read from store. The error wraps ErrUnusable or
// ErrKeyMismatch when the backup fails the drill; the Result says what was
// found either way. The scratch folder is removed before Run returns, also
// when ctx ends.
func Run(ctx context.Context, store restore.Store, b *restore.Backup, opts Options) (res *Result, err error) {
	start := time.Now()
	m := b.Manifest
	res = &Result{
		Manifest: b.ManifestKey, Cluster: m.Namespace + "/" + m.Cluster, Need: Estimate(m),
		ExpectedRevision: m.Etcd.Revision + RevisionBump, EtcdVersion: etcdVersion,
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.freeSpace == nil {
		opts.freeSpace = FreeSpace
	}
	s := &state{store: store, backup: b, opts: opts, res: res}
	defer func() {
		if s.etcd != nil {
			s.etcd.Close()
		}
		if s.scratch != "" {
			if rmErr := os.RemoveAll(s.scratch); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("remove the scratch folder %s: %w", s.scratch, rmErr))
			}
		}
		res.Duration = time.Since(start).Round(time.Millisecond).Seconds()
	}()
	for _, p := range phases {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if opts.Progress != nil {
			opts.Progress(p.Name)
		}
		if err := p.Run(ctx, s); err != nil {
			if ctx.Err() != nil {
				// Interrupted: whatever the step saw is not a verdict on the backup.
				return res, fmt.Errorf("step %s: %w", p.Name, ctx.Err())
			}
			return res, fmt.Errorf("step %s: %w", p.Name, err)
		}
	}
	return res, verdict(res)
}

// FreeSpace returns the bytes an unprivileged user may still write on the
// file system of dir.
func FreeSpace(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// ErrNoSpace is returned when the scratch folder's file system has less
// free space than the drill needs.
var ErrNoSpace = errors.New("not enough free space")

func checkSpace(_ context.Context, s *state) error {
	free, err := s.opts.freeSpace(s.opts.ScratchDir)
	if err != nil {
		return fmt.Errorf("scratch folder %s: %w", s.opts.ScratchDir, err)
	}
	s.res.Need.Free = free
	if free < s.res.Need.Bytes {
		return fmt.Errorf("%w in %s: the drill needs %d MiB, %d MiB are free; pass --scratch-dir on a larger file system", ErrNoSpace, s.opts.ScratchDir, s.res.Need.Bytes>>20, free>>20)
	}
	dir, err := os.MkdirTemp(s.opts.ScratchDir, "hcpsnap-drill-")
	if err != nil {
		return fmt.Errorf("scratch folder: %w", err)
	}
	s.scratch = dir
	return nil
}

// fetchSnapshot streams the snapshot object into the scratch folder,
// checking its size, etcd's appended SHA-256 and the whole object's
// SHA-256 against the manifest.
func fetchSnapshot(ctx context.Context, s *state) error {
	m := s.backup.Manifest
	if err := restore.CheckSnapshot(ctx, s.store, s.backup); err != nil {
		return fmt.Errorf("%w: %w", ErrUnusable, err)
	}
	rc, _, err := s.store.Get(ctx, m.Snapshot.Key)
	if err != nil {
		return fmt.Errorf("%w: read snapshot %s: %w", ErrUnusable, m.Snapshot.Key, err)
	}
	defer rc.Close()
	f, err := os.OpenFile(filepath.Join(s.scratch, "snapshot.db"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	v := etcdsnap.NewVerifier(rc, m.Snapshot.Size, m.Etcd.SHA256)
	n, err := io.Copy(f, v)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: snapshot %s after %d bytes: %w", ErrUnusable, m.Snapshot.Key, n, err)
	}
	if got := v.FileSHA256(); got != m.Snapshot.SHA256 {
		return fmt.Errorf("%w: snapshot %s has SHA-256 %s, the manifest says %s", ErrUnusable, m.Snapshot.Key, short(got), short(m.Snapshot.SHA256))
	}
	s.res.Checks = append(s.res.Checks, Check{Name: "snapshot", OK: true,
		Detail: fmt.Sprintf("%d bytes, SHA-256 and etcd's own hash match the manifest", n)})
	return f.Close()
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// memberName is the restored member's name; it only has to agree between
// the restore and the embedded etcd.
const memberName = "drill"

// restoreSnapshot runs etcd's own `etcdutl snapshot restore` code with the
// options HyperShift's etcd-init uses.
func restoreSnapshot(ctx context.Context, s *state) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	s.res.ClientURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	s.res.PeerURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	err = snapshot.NewV3(s.opts.Logger).Restore(snapshot.RestoreConfig{
		SnapshotPath:        filepath.Join(s.scratch, "snapshot.db"),
		Name:                memberName,
		OutputDataDir:       filepath.Join(s.scratch, "data"),
		PeerURLs:            []string{s.res.PeerURL},
		InitialCluster:      memberName + "=" + s.res.PeerURL,
		InitialClusterToken: "hcpsnap-drill",
		RevisionBump:        RevisionBump,
		MarkCompacted:       MarkCompacted,
	})
	if err != nil {
		return fmt.Errorf("%w: etcd %s's snapshot restore failed: %w", ErrUnusable, etcdVersion, err)
	}
	s.res.Checks = append(s.res.Checks, Check{Name: "restore", OK: true,
		Detail: fmt.Sprintf("etcdutl %s snapshot restore --bump-revision %d --mark-compacted", etcdVersion, RevisionBump)})
	return nil
}

// freePorts asks the kernel for n free loopback ports. Another process may
// take one before etcd binds it; the drill then fails to start and says so.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startEtcd starts an embedded etcd on the restored data, listening on
// loopback only, and waits until it serves.
func startEtcd(ctx context.Context, s *state) error {
	cu, _ := url.Parse(s.res.ClientURL)
	pu, _ := url.Parse(s.res.PeerURL)
	cfg := embed.NewConfig()
	cfg.Name = memberName
	cfg.Dir = filepath.Join(s.scratch, "data")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = memberName + "=" + s.res.PeerURL
	cfg.InitialClusterToken = "hcpsnap-drill"
	cfg.ClusterState = embed.ClusterStateFlagExisting
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(s.opts.Logger)
	cfg.AutoCompactionRetention = "0"
	// A large database must open: HyperShift's quota is 8 GiB.
	cfg.QuotaBackendBytes = 8 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("%w: the restored data does not start in etcd %s: %w", ErrUnusable, etcdVersion, err)
	}
	s.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("%w: etcd %s stopped on the restored data: %w", ErrUnusable, etcdVersion, err)
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%w: etcd %s did not become ready on the restored data in 2m", ErrUnusable, etcdVersion)
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// inspectEtcd reads the revision and the contents of the embedded etcd and
// checks the Secrets against the key bundle.
func inspectEtcd(ctx context.Context, s *state) error {
	r, err := newClientReader(ctx, s.res.ClientURL)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnusable, err)
	}
	defer r.Close()
	rev, err := r.revision(ctx)
	if err != nil {
		return fmt.Errorf("%w: read the restored etcd: %w", ErrUnusable, err)
	}
	s.res.Revision = rev
	keys, unchecked := bundleKeys(s.opts.KeyBundle, s.opts.NoKeyBundle)
	c, err := inspect(ctx, r, keys, unchecked)
	if err != nil {
		return fmt.Errorf("%w: read the restored etcd: %w", ErrUnusable, err)
	}
	s.res.Contents = c
	judge(s.res, s.backup.Manifest)
	return nil
}

// bundleKeys takes the AES keys out of the key bundle, by role.
func bundleKeys(bundle []corev1.Secret, none string) ([]namedKey, string) {
	var keys []namedKey
	for _, sec := range bundle {
		role := sec.Annotations[manifest.RoleAnnotation]
		if role != manifest.RoleActiveKey && role != manifest.RoleBackupKey {
			continue
		}
		if k := sec.Data["key"]; len(k) > 0 {
			keys = append(keys, namedKey{role: role, key: k})
		}
	}
	// The active key first: it encrypts what the cluster wrote last.
	if len(keys) == 2 && keys[0].role == manifest.RoleBackupKey {
		keys[0], keys[1] = keys[1], keys[0]
	}
	switch {
	case len(keys) > 0:
		return keys, ""
	case none != "":
		return nil, none
	case bundle != nil:
		return nil, "the key bundle holds no AES key (no Secret with " + manifest.RoleAnnotation + "=" + manifest.RoleActiveKey + ")"
	}
	return nil, "no key bundle was given"
}
