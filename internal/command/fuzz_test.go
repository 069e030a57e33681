package command

import (
	"encoding/json"
	"path"
	"strings"
	"testing"

	"github.com/hcpsnap/hcpsnap/checkpoint"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/steps"
)

// FuzzRecordedRun feeds --resume's reading of a run annotation arbitrary
// values, as anyone allowed to patch HostedClusters may write them:
// checkpoint.Decode, then checkRecorded. It must not panic; a refusal is a
// usage error on one line; and a run it accepts is safe to act on: its
// options pass the flags' validation, the snapshot file in the pod is the
// one derived from the snapshot folder and the run ID, the control plane
// namespace is the cluster's, what runs in the pod and what is scaled are
// this machine's choice, and no local key file comes from the annotation.
func FuzzRecordedRun(f *testing.F) {
	// testdata/fuzz/FuzzRecordedRun holds whole annotations: a run that
	// died with the API down, and edited copies of it (snapshot path,
	// etcdctl, a key file, a Deployment name with a line break).
	for _, r := range []*checkpoint.Run{
		midRun(f, nil, nil),
		midRun(f, func(o *steps.Options) { o.Online, o.Deployments = true, nil }, func(o *steps.Outputs, _ string) { o.Replicas, o.PausedUntil = nil, nil }),
		midRun(f, nil, func(o *steps.Outputs, _ string) { o.Attempt.Path = "/var/lib/data/member" }),
	} {
		data, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		run, err := checkpoint.Decode(data)
		if err != nil {
			return // FuzzDecode covers the decoding's own refusals
		}
		rec, err := checkRecorded(run, nil, testCluster, recordedOptions())
		if err != nil {
			if exitcode.Of(err) != exitcode.Usage {
				t.Fatalf("refusal with exit %d, want %d: %v", exitcode.Of(err), exitcode.Usage, err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("refusal is not one line: %q", err)
			}
			return
		}
		if err := validateOptions(rec.opts); err != nil {
			t.Fatalf("accepted options that flags would refuse: %v", err)
		}
		if here := recordedOptions(); rec.opts.Etcd != here.Etcd || rec.opts.Member != here.Member || rec.opts.Container != here.Container ||
			strings.Join(rec.opts.Deployments, ",") != strings.Join(here.Deployments, ",") {
			t.Fatalf("the annotation chose what runs in the pod: %+v", rec.opts)
		}
		if rec.opts.KeyOut != "" {
			t.Fatalf("the annotation chose the local key file %q", rec.opts.KeyOut)
		}
		if rec.opts.Cluster != testCluster.Name || rec.opts.Namespace != testCluster.Namespace {
			t.Fatalf("accepted options of cluster %s/%s", rec.opts.Namespace, rec.opts.Cluster)
		}
		want := path.Join(rec.opts.Etcd.SnapshotDir, "hcpsnap-"+run.RunID+".db")
		if a := rec.out.Attempt; a != nil && a.Path != "" && a.Path != want {
			p := a.Path
			t.Fatalf("snapshot path %q, want the derived %q", p, want)
		}
		if !checkpoint.ValidRunID(run.RunID) || path.Dir(want) != rec.opts.Etcd.SnapshotDir {
			t.Fatalf("run ID %q escapes the snapshot folder", run.RunID)
		}
		if ns := rec.out.HCPNamespace; ns != "" && ns != "clusters-example" {
			t.Fatalf("control plane namespace %q", ns)
		}
		for name, n := range rec.out.Replicas {
			if n < 1 || n > 100 || !strings.Contains(","+strings.Join(rec.opts.Deployments, ",")+",", ","+name+",") {
				t.Fatalf("replicas %d of %q accepted", n, name)
			}
		}
	})
}
