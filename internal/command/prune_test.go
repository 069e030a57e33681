package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/manifest"
	"github.com/hcpsnap/hcpsnap/prune"
	"github.com/hcpsnap/hcpsnap/retention"
	"github.com/hcpsnap/hcpsnap/s3"
	"github.com/hcpsnap/hcpsnap/steps"
)

// TestPruneBadInput: each bad policy or flag is one line on stderr and
// exit 2, before the bucket is opened (the bucket here does not exist).
func TestPruneBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"prune", "--bucket", "bkt"}, "policy is empty"},
		{[]string{"prune", "--bucket", "bkt", "--include-incomplete"}, "policy is empty"},
		{[]string{"prune", "--bucket", "bkt", "--keep-last", "-1"}, "--keep-last -1 is negative"},
		{[]string{"prune", "--bucket", "bkt", "--keep-weekly", "2", "--keep-monthly", "-2"}, "--keep-monthly -2 is negative"},
		{[]string{"prune", "--bucket", "bkt", "--keep-within", "forever"}, `--keep-within "forever" is not a duration`},
		{[]string{"prune", "--bucket", "bkt", "--keep-within", "-3h"}, "--keep-within -3h is negative"},
		{[]string{"prune", "--bucket", "bkt", "--keep-daily", "many"}, "keep-daily"},
		{[]string{"prune", "--keep-last", "1"}, "--bucket is required"},
		{[]string{"prune", "--bucket", "bkt", "--keep-last", "1", "--cluster", "Not_A_Name"}, "--cluster \"Not_A_Name\""},
		{[]string{"prune", "--bucket", "bkt", "--keep-last", "1", "extra"}, "takes no arguments"},
		{[]string{"backup", "--cluster", "c", "--bucket", "bkt", "--keep-last", "2"}, "apply to --prune"},
		{[]string{"backup", "--cluster", "c", "--bucket", "bkt", "--prune"}, "policy is empty"},
		{[]string{"backup", "--cluster", "c", "--bucket", "bkt", "--prune", "--keep-within", "2w"}, `"2w" is not a duration`},
		{[]string{"backup", "--cluster", "c", "--abandon", "--prune", "--keep-last", "1"}, "exclude each other"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			env := map[string]string{"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1", "HCPSNAP_BUCKET": ""}
			stdout, stderr, code := run(t, env, c.args...)
			if code != exitcode.Usage {
				t.Fatalf("exit code %d, want %d (stderr %q)", code, exitcode.Usage, stderr)
			}
			_, err := runErr(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q should be one line containing %q", err, c.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

// runErr runs the root command and returns its error, whose message main
// prints as the one line of a failure.
func runErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := New(strings.NewReader(""), &out, &errOut).Run(context.Background(), append([]string{"hcpsnap"}, args...))
	return out.String(), err
}

// pruneFake is a bucket for runPrune: one complete old backup, one newer,
// and a delete that can fail.
type pruneFake struct {
	objects   map[string][]byte
	meta      map[string]map[string]string
	listErr   error
	deleteErr error
}

func newPruneFake() *pruneFake {
	f := &pruneFake{objects: map[string][]byte{}, meta: map[string]map[string]string{}}
	for _, ts := range []string{"20260310T000000Z", "20260301T000000Z"} {
		folder := "backups/c/" + ts + "/"
		f.objects[folder+"snapshot.db"] = []byte("snap")
		f.meta[folder+"snapshot.db"] = map[string]string{manifest.MetaRunID: "r" + ts}
		f.objects[folder+"manifest.json"] = []byte(`{"schemaVersion":1,"runID":"r` + ts + `","cluster":"c","snapshot":{"key":"` + folder + `snapshot.db","size":4}}`)
	}
	return f
}

func (f *pruneFake) Head(_ context.Context, key string) (s3.ObjectInfo, bool, error) {
	d, ok := f.objects[key]
	return s3.ObjectInfo{Key: key, Size: int64(len(d)), Metadata: f.meta[key]}, ok, nil
}

func (f *pruneFake) Get(_ context.Context, key string) (io.ReadCloser, s3.ObjectInfo, error) {
	d, ok := f.objects[key]
	if !ok {
		return nil, s3.ObjectInfo{}, errors.New("NoSuchKey")
	}
	return io.NopCloser(bytes.NewReader(d)), s3.ObjectInfo{Key: key, Size: int64(len(d))}, nil
}

func (f *pruneFake) List(_ context.Context, prefix string) ([]s3.ObjectInfo, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []s3.ObjectInfo
	for k := range f.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, s3.ObjectInfo{Key: k})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (f *pruneFake) Presign(context.Context, string, time.Duration) (string, time.Time, error) {
	return "", time.Time{}, errors.New("no presign here")
}

func (f *pruneFake) Put(_ context.Context, key string, data []byte, _ s3.PutOptions) error {
	f.objects[key] = data
	return nil
}

func (f *pruneFake) Delete(_ context.Context, key string) error {
	if f.deleteErr != nil {
		return f.deleteErr
	}
	delete(f.objects, key)
	return nil
}

// TestRunPruneExitCodes: a listing failure is a precondition (nothing
// removed), a failed removal is partial (6), a removal is 0, and every
// backup has its NDJSON line.
func TestRunPruneExitCodes(t *testing.T) {
	opts := prune.Options{Bucket: "bkt", Prefix: "backups", KeyPrefix: "hcpsnap-keys",
		Retention: retention.Options{Policy: retention.Policy{Last: 1}}}
	for _, c := range []struct {
		name  string
		setup func(*pruneFake)
		code  exitcode.Code
		left  int
	}{
		{"removed", func(*pruneFake) {}, exitcode.OK, 2},
		{"listing fails", func(f *pruneFake) { f.listErr = errors.New("connection refused") }, exitcode.Precondition, 4},
		{"delete fails", func(f *pruneFake) { f.deleteErr = fmt.Errorf("delete: %w", s3.ErrDeleteRefused) }, exitcode.Partial, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newPruneFake()
			c.setup(f)
			var out bytes.Buffer
			err := runPrune(context.Background(), f, pruneRun{opts: opts, format: OutputJSON, out: &out})
			if got := exitcode.Of(err); got != c.code {
				t.Fatalf("exit code %d (%v), want %d", got, err, c.code)
			}
			if len(f.objects) != c.left {
				t.Errorf("%d objects left, want %d", len(f.objects), c.left)
			}
			if c.code == exitcode.Precondition {
				return
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 3 || !strings.Contains(lines[2], `"message_type":"prune_summary"`) {
				t.Errorf("output %q, want two backups and a summary", out.String())
			}
		})
	}
}

// TestPruneAfterBackup: after a backup that completed, a failed prune is
// exit 6 and says the backup stands; without --prune nothing is read.
func TestPruneAfterBackup(t *testing.T) {
	f := newPruneFake()
	f.listErr = errors.New("connection refused")
	var out bytes.Buffer
	o := &BackupOptions{Prune: true, policy: retention.Policy{Last: 1}, pruneStore: f, Global: &GlobalOptions{Output: OutputText}, Out: &out}
	o.Bucket, o.Prefix, o.Cluster = "bkt", "backups", "c"
	state := &steps.State{Out: &steps.Outputs{ManifestKey: "backups/c/20260311T000000Z/manifest.json"}}
	err := o.pruneAfterBackup(context.Background(), state)
	if exitcode.Of(err) != exitcode.Partial || !strings.Contains(err.Error(), "backup complete (s3://bkt/backups/c/20260311T000000Z/manifest.json)") {
		t.Fatalf("err %v (exit %d), want exit 6 naming the backup", err, exitcode.Of(err))
	}
	o.Prune = false
	if err := o.pruneAfterBackup(context.Background(), state); err != nil {
		t.Fatalf("without --prune: %v", err)
	}
}
