package schedule

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParseCron(t *testing.T) {
	tests := []struct {
		spec    string
		wantErr string
	}{
		{spec: "0 2 * * *"},
		{spec: "*/15 * * * *"},
		{spec: "30 9 * * 1-5"},
		{spec: "@daily"},
		{spec: "@hourly"},
		{spec: "", wantErr: "empty"},
		{spec: "61 * * * *", wantErr: "end of range"},
		{spec: "0 2 * *", wantErr: "expected exactly 5 fields"},
		{spec: "0 2 * * * *", wantErr: "expected exactly 5 fields"},
		{spec: "TZ=UTC 0 2 * * *", wantErr: "time zone"},
		{spec: "CRON_TZ=Europe/Paris 0 2 * * *", wantErr: "time zone"},
		{spec: "0 0 30 2 *", wantErr: "never fires"},
		{spec: "every day", wantErr: "expected exactly 5 fields"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := ParseCron(tt.spec)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseCron(%q) = %v, want no error", tt.spec, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseCron(%q) = %v, want an error with %q", tt.spec, err, tt.wantErr)
			}
		})
	}
}

func TestLoadTimeZone(t *testing.T) {
	for _, ok := range []string{"UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Asia/Kolkata"} {
		if _, err := LoadTimeZone(ok); err != nil {
			t.Errorf("LoadTimeZone(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Local", "local", "Mars/Olympus_Mons", "../etc/passwd", "Europe//Paris", "/UTC", "Europe/-Paris", "Europe/Paris "} {
		if _, err := LoadTimeZone(bad); err == nil {
			t.Errorf("LoadTimeZone(%q) accepted it", bad)
		}
	}
}

// TestNextRun checks the next run in time zones on both sides of UTC, in
// winter and summer time, across a weekend.
func TestNextRun(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		schedule, tz, now, want string
	}{
		{"*/15 * * * *", "UTC", "2026-01-15T12:07:00Z", "2026-01-15T12:15:00Z"},
		// 02:00 in Paris is 01:00 UTC in winter (CET), 00:00 UTC in summer (CEST).
		{"0 2 * * *", "Europe/Paris", "2026-01-15T12:00:00Z", "2026-01-16T01:00:00Z"},
		{"0 2 * * *", "Europe/Paris", "2026-07-15T12:00:00Z", "2026-07-16T00:00:00Z"},
		// Before 02:00 Paris on the same day: today's run.
		{"0 2 * * *", "Europe/Paris", "2026-01-15T00:30:00Z", "2026-01-15T01:00:00Z"},
		// Friday 10:00 in New York (EST): the next weekday 09:30 is Monday's.
		{"30 9 * * 1-5", "America/New_York", "2026-01-16T15:00:00Z", "2026-01-19T14:30:00Z"},
		// Midnight in Kolkata (UTC+05:30) is 18:30 UTC the day before.
		{"0 0 * * *", "Asia/Kolkata", "2026-01-01T00:00:00Z", "2026-01-01T18:30:00Z"},
		{"@daily", "UTC", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.schedule+" "+tt.tz+" "+tt.now, func(t *testing.T) {
			got, err := NextRun(tt.schedule, tt.tz, at(tt.now))
			if err != nil {
				t.Fatal(err)
			}
			if want := at(tt.want); !got.Equal(want) {
				t.Fatalf("NextRun = %s, want %s", got.UTC().Format(time.RFC3339), tt.want)
			}
		})
	}
	if _, err := NextRun("0 2 * * *", "Nowhere/Land", time.Now()); err == nil {
		t.Error("NextRun accepted an unknown time zone")
	}
	if _, err := NextRun("0 25 * * *", "UTC", time.Now()); err == nil {
		t.Error("NextRun accepted hour 25")
	}
}

func TestCheckImage(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	for _, ok := range []string{
		"quay.io/acme/hcpsnap@sha256:" + hex,
		"registry.example.com:5000/hcpsnap@sha256:" + hex,
		"hcpsnap@sha256:" + hex,
		"quay.io/acme/hcpsnap:v1.2.0@sha256:" + hex,
	} {
		if err := CheckImage(ok); err != nil {
			t.Errorf("CheckImage(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{
		"",
		"quay.io/acme/hcpsnap",
		"quay.io/acme/hcpsnap:latest",
		"quay.io/acme/hcpsnap@sha256:" + hex[:63],
		"quay.io/acme/hcpsnap@sha512:" + hex + hex,
		"quay.io/acme/hcpsnap@sha256:" + strings.ToUpper(hex),
		"@sha256:" + hex,
		"Quay.io/acme/hcpsnap@sha256:" + hex,
		"quay.io/acme/hcp snap@sha256:" + hex,
	} {
		if err := CheckImage(bad); err == nil {
			t.Errorf("CheckImage(%q) accepted it", bad)
		}
	}
}

func TestDefaultName(t *testing.T) {
	if got := DefaultName(Target{Namespace: "clusters", Cluster: "example"}); got != "hcpsnap-clusters-example" {
		t.Errorf("DefaultName of one cluster = %q", got)
	}
	long := DefaultName(Target{Namespace: "clusters", Cluster: strings.Repeat("a", 60)})
	long2 := DefaultName(Target{Namespace: "clusters", Cluster: strings.Repeat("a", 59) + "b"})
	if long == long2 {
		t.Errorf("two long names cut to the same %q", long)
	}
	seen := map[string]Target{}
	for _, tgt := range []Target{
		{Namespace: "clusters", Selector: "env=prod"},
		{Namespace: "clusters", Selector: "env==prod"},
		{Namespace: "clusters", Selector: "env!=prod"},
		{Namespace: "other", Selector: "env=prod"},
		{AllNamespaces: true, Selector: "env=prod"},
		{AllNamespaces: true},
		{Namespace: "clusters", Selector: "tier in (" + strings.Repeat("database,", 10) + "x)"},
		{Namespace: "clusters", Cluster: strings.Repeat("a", 60)},
	} {
		name := DefaultName(tgt)
		if err := CheckName(name); err != nil {
			t.Errorf("DefaultName(%+v) = %q: %v", tgt, name, err)
		}
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("DefaultName(%+v) = %q: %v", tgt, name, errs)
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("DefaultName(%+v) = DefaultName(%+v) = %q", tgt, prev, name)
		}
		seen[name] = tgt
	}
}
