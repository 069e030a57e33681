package checkpoint

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzDecode feeds Decode arbitrary run files, as a user's editor, a full
// disk or another hcpsnap version may leave them, and as anyone who can
// annotate the HostedCluster may write them. Decode must not panic and its
// errors must be one line; a run it accepts must validate against its own
// cluster, be refused for another one without a panic, and come back equal
// after json.Marshal and Decode, so that a resumed run writes back what it
// read.
func FuzzDecode(f *testing.F) {
	// testdata/fuzz/FuzzDecode holds whole run files: one as WriteFile
	// writes it, the same compact as in the annotation, truncated, of a
	// newer schema and of another cluster. These are the corners.
	for _, seed := range []string{
		`{"schemaVersion":1,"runID":"r","steps":[{"name":"a","status":"done","startedAt":"2025-01-01T00:00:00.5+01:00"}],"options":null}`,
		`{"schemaVersion":1,"runID":"r","outputs":{ "a" : [1, "<b>"] }}`,
		`{"schemaVersion":2,"runID":"r"}`,
		`{}`,
		`null`,
	} {
		f.Add([]byte(seed))
	}
	other := Cluster{Namespace: "clusters", Name: "example-other", UID: "uid-2"}
	f.Fuzz(func(t *testing.T, data []byte) {
		run, err := Decode(data)
		if err != nil {
			assertOneLine(t, "Decode", err)
			if run != nil {
				t.Fatalf("Decode returned a run with an error")
			}
			return
		}
		if err := run.Validate(run.Command, run.Cluster); err != nil {
			t.Fatalf("a decoded run does not validate against its own cluster: %v", err)
		}
		for _, c := range []Cluster{cluster, other, {}} {
			if err := run.Validate("backup", c); err != nil {
				assertOneLine(t, "Validate", err)
			}
		}
		again, err := json.Marshal(run)
		if err != nil {
			t.Fatalf("a decoded run does not encode: %v", err)
		}
		run2, err := Decode(again)
		if err != nil {
			t.Fatalf("a decoded and encoded run does not decode: %v\n%s", err, again)
		}
		if !equalRuns(run, run2) {
			t.Fatalf("the run changed in a round trip:\n%+v\n%+v", run, run2)
		}
	})
}

// equalRuns compares runs field by field, times as instants (a time read
// with offset +00:00 may come back in time.Local, then in UTC) and raw JSON
// by meaning (encoding compacts and HTML-escapes a json.RawMessage).
func equalRuns(a, b *Run) bool {
	canon := func(r *Run) Run {
		c := *r
		for _, m := range []*json.RawMessage{&c.Options, &c.Outputs} {
			out, err := json.Marshal(*m)
			if err != nil {
				out = []byte("invalid: " + err.Error())
			}
			*m = out
		}
		c.StartedAt, c.UpdatedAt = c.StartedAt.UTC(), c.UpdatedAt.UTC()
		c.Steps = slices.Clone(c.Steps)
		for i := range c.Steps {
			for _, t := range []**time.Time{&c.Steps[i].StartedAt, &c.Steps[i].FinishedAt} {
				if *t != nil {
					u := (*t).UTC()
					*t = &u
				}
			}
		}
		return c
	}
	return reflect.DeepEqual(canon(a), canon(b))
}

func assertOneLine(t *testing.T, what string, err error) {
	t.Helper()
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("%s error is not one line: %q", what, err)
	}
}
