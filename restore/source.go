package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	pathpkg "path"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/hcpsnap/hcpsnap/internal/etcdsnap"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/s3"
)

// Store is what restore needs of the bucket that holds the backups.
type Store interface {
	Head(ctx context.Context, key string) (s3.ObjectInfo, bool, error)
	Get(ctx context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error)
	List(ctx context.Context, prefix string) ([]s3.ObjectInfo, error)
	Presign(ctx context.Context, key string, expires time.Duration) (string, time.Time, error)
}

// Backup is a backup found in the bucket.
type Backup struct {
	ManifestKey string
	Manifest    *manifest.Manifest
}

// maxManifestBytes bounds what is read as a manifest or a key bundle.
const maxManifestBytes = 4 << 20

// ManifestKeyFor returns the manifest key of a backup named by its manifest
// or its snapshot key (they sit side by side).
func ManifestKeyFor(key string) (string, error) {
	switch pathpkg.Base(key) {
	case "manifest.json":
		return key, nil
	case "snapshot.db":
		return pathpkg.Join(pathpkg.Dir(key), "manifest.json"), nil
	}
	return "", fmt.Errorf("--from must name a backup's manifest.json or snapshot.db, not %q", pathpkg.Base(key))
}

// Load reads and checks the manifest at key.
func Load(ctx context.Context, store Store, key string) (*Backup, error) {
	data, err := ReadSmall(ctx, store, key, maxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("backup manifest %s: %w; hcpsnap backup writes it last, so a backup without one is incomplete", key, err)
	}
	m, err := manifest.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("backup manifest %s: %w", key, err)
	}
	return &Backup{ManifestKey: key, Manifest: m}, nil
}

// Unreadable is a manifest that List found but could not use.
type Unreadable struct {
	Key string
	Err error
}

// List returns the backups of cluster under prefix (of every cluster when
// cluster is empty), newest first, and the
// manifests it skipped: one damaged, foreign or unreadable manifest must not
// hide every other backup. Only a failure to list, or the end of ctx, is an
// error.
func List(ctx context.Context, store Store, prefix, cluster string) ([]*Backup, []Unreadable, error) {
	dir := strings.TrimPrefix(pathpkg.Join(prefix, cluster), "/")
	if dir != "" {
		dir += "/"
	}
	objs, err := store.List(ctx, dir)
	if err != nil {
		return nil, nil, err
	}
	var backups []*Backup
	var skipped []Unreadable
	for _, o := range objs {
		if pathpkg.Base(o.Key) != "manifest.json" {
			continue
		}
		b, err := Load(ctx, store, o.Key)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if err != nil {
			skipped = append(skipped, Unreadable{Key: o.Key, Err: err})
			continue
		}
		backups = append(backups, b)
	}
	sort.Slice(backups, func(i, j int) bool {
		return backups[i].Manifest.Times.Finished.After(backups[j].Manifest.Times.Finished)
	})
	return backups, skipped, nil
}

// Namespaces returns the namespaces, sorted, of the HostedClusters whose
// backups are listed. Backups live under <prefix>/<name>/, so HostedClusters
// of one name in several namespaces share a folder; more than one namespace
// means "the newest backup of NAME" names no single cluster.
func Namespaces(backups []*Backup) []string {
	seen := map[string]bool{}
	var out []string
	for _, b := range backups {
		if ns := b.Manifest.Namespace; !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	sort.Strings(out)
	return out
}

// CheckSnapshot refuses a backup whose snapshot object is missing or does
// not match its manifest (the size, and the run recorded on the object).
func CheckSnapshot(ctx context.Context, store Store, b *Backup) error {
	m := b.Manifest
	info, ok, err := store.Head(ctx, m.Snapshot.Key)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("snapshot %s of backup %s is missing from the bucket: choose another backup", m.Snapshot.Key, b.ManifestKey)
	}
	if info.Size != m.Snapshot.Size || info.Metadata[manifest.MetaRunID] != m.RunID {
		return fmt.Errorf("snapshot %s does not match its manifest (size %d, manifest %d; run %s): the object was replaced or damaged; choose another backup",
			m.Snapshot.Key, info.Size, m.Snapshot.Size, matchWord(info.Metadata[manifest.MetaRunID] == m.RunID))
	}
	return nil
}

func matchWord(ok bool) string {
	if ok {
		return "matches"
	}
	return "differs"
}

// KeyBundle reads the backup's key bundle: from the bucket, or from keyFile
// when the backup wrote it to a local file (--key-out) or the user has a copy.
func KeyBundle(ctx context.Context, store Store, b *Backup, keyFile string) ([]corev1.Secret, error) {
	var data []byte
	var err error
	switch {
	case keyFile != "":
		data, err = os.ReadFile(keyFile)
	case b.Manifest.KeyBundle.Key != "":
		data, err = ReadSmall(ctx, store, b.Manifest.KeyBundle.Key, maxManifestBytes)
	default:
		return nil, fmt.Errorf("backup %s keeps its key bundle in a local file (%s): pass it with --key-file", b.ManifestKey, b.Manifest.KeyBundle.File)
	}
	if err != nil {
		return nil, fmt.Errorf("key bundle of backup %s: %w", b.ManifestKey, err)
	}
	secrets, err := manifest.DecodeKeyBundle(data)
	if err != nil {
		return nil, fmt.Errorf("key bundle of backup %s: %w", b.ManifestKey, err)
	}
	return secrets, nil
}

// Verify downloads the snapshot through the presigned URL exactly as
// HyperShift's etcd-init container does — plain HTTP GET, no credentials —
// and checks that it is the backup's snapshot: status 200 (not an S3 error
// page), the size, etcd's trailing SHA-256 and the whole object's SHA-256.
// Errors never contain the URL.
func Verify(ctx context.Context, client *http.Client, url string, m *manifest.Manifest) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return errors.New("verify: the presigned URL is not a valid URL")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("verify: GET of the presigned URL failed: %s", redactURL(err.Error(), url))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("verify: the presigned URL answered %s%s: an etcd-init container would fail the same way", resp.Status, s3ErrorCode(body))
	}
	v := etcdsnap.NewVerifier(resp.Body, m.Snapshot.Size, m.Etcd.SHA256)
	n, err := io.Copy(io.Discard, v)
	if err != nil {
		return fmt.Errorf("verify: the download through the presigned URL failed after %d bytes: %s", n, redactURL(err.Error(), url))
	}
	if got := v.FileSHA256(); got != m.Snapshot.SHA256 {
		return fmt.Errorf("verify: the download's SHA-256 %s differs from the manifest's %s", short(got), short(m.Snapshot.SHA256))
	}
	return nil
}

// s3ErrorCode extracts <Code> from an S3 XML error body.
func s3ErrorCode(body []byte) string {
	s := string(body)
	i := strings.Index(s, "<Code>")
	j := strings.Index(s, "</Code>")
	if i < 0 || j < i {
		return ""
	}
	return " (" + s[i+len("<Code>"):j] + ")"
}

func redactURL(s, url string) string {
	if url == "" {
		return s
	}
	s = strings.ReplaceAll(s, url, "[presigned URL]")
	if i := strings.Index(url, "?"); i > 0 {
		s = strings.ReplaceAll(s, url[i:], "?[redacted]")
	}
	return s
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// ReadSmall reads a whole object that is expected to be small (a manifest,
// a key bundle), refusing one larger than max bytes instead of holding it.
func ReadSmall(ctx context.Context, store Store, key string, max int) ([]byte, error) {
	rc, _, err := store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(data) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}
