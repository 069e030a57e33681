package management

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EnvSystemdOptional, set to any value, lets the tests that need
// systemd-analyze skip when it is missing. `make unit` installs it (Debian's
// systemd package) and leaves this unset, so CI runs them.
const EnvSystemdOptional = "HCPSNAP_SYSTEMD_OPTIONAL"

// systemdAnalyze returns the path of systemd-analyze, failing the test when
// it is missing unless EnvSystemdOptional says it may be.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv(EnvSystemdOptional) != "" {
			t.Skipf("systemd-analyze is missing and %s is set: skipped", EnvSystemdOptional)
		}
		t.Fatalf("systemd-analyze is missing: run the tests through 'make unit' (it installs Debian's systemd package), or set %s=1 to skip", EnvSystemdOptional)
	}
	return path
}

// calendarCorpus are events for the differential test: each shorthand, every
// kind of field, the edges of each field's bounds, time zones, and events
// systemd rejects.
var calendarCorpus = []string{
	// Shorthands, in any case.
	"minutely", "hourly", "daily", "DAILY", "weekly", "monthly", "yearly", "annually", "anually",
	"quarterly", "semiannually", "semi-annually", "biannually", "bi-annually",
	// Times and dates.
	"*-*-* 02:00:00", "*-*-* 02:00", "02:00", "2:3", "*-*-01 00:00", "*-02-29 12:00", "2027-03-04",
	"27-03-04 05:06:07", "99-01-01", "2027-*-* 00:00", "2026..2030-01-01", "*-01,07-01 00:00",
	"*-1..6/2-1 3:4", "*-*-1/10", "*-*-31", "*-02-30", "2020-01-01", "*-*-* 23:59:59.999999",
	// Lists, ranges and repetitions.
	"*-*-* 0/6:00", "*-*-* *:0/15", "*-*-* *:*:*", "*-*-* *:*:0/10", "*-*-* 1,3,5:00",
	"*-*-* 1..23/2:00", "*-*-* 3,1,3,2:00", "*-*-* 1..10/4:00", "*-*-* 00:00:01.5",
	"*-*-* 00:00:00.1234567", "*-*-* 00:00:0..30/7.5", "*-*-* 00:00:1..3", "*-*-* 5..5:00", "*-*-* 5..6/2:00", "*-*~3..3",
	// Weekdays.
	"Mon 12:00", "Mon,Tue 12:00", "Mon..Fri 08:30", "Mon-Fri 08:30", "Sat,Sun", "Mon, 12:00",
	"Monday..Wednesday,Friday 23:59:59", "mon,wed,fri *-*-* 06:00", "Mon,Tue,Wed,Thu,Fri,Sat,Sun 04:00",
	"Sat,Mon..Wed 12:00", "Fri *-*-13",
	// The end of the month.
	"*-02~03", "*-*~1 23:00", "Mon *-05~07/1", "*-*~07..01", "*-*~28",
	// Time zones.
	"*-*-* 00:00:00 UTC", "daily UTC", "daily utc", "daily Europe/Paris", "Mon..Fri 02:00 America/New_York",
	"*-*-* 02:30 Europe/Berlin", "weekly Asia/Kolkata", "*-*-* 05:00 Etc/UTC", "12:00:00 Australia/Lord_Howe",
	// A moment.
	"@1767225600",
	// Rejected.
	"", " daily", "*/2", "Mon..", "Mon-", "Fri..Mon", "Mon..Tue..Wed", "Mond", "Mon Tue", "25:00",
	"*-*-* 24:00", "*-13-01", "*-*-32", "*-*-0", "1969-01-01", "2200-01-01", "*-*-* 00:60",
	"*-*-* 00:00:60", "*-*-* 0/0:00", "*-*-* 5..3:00", "*-*-* 00:00:1..1", "*-*-* 00:00:1..1.5", "*-*-* 00:30/30", "*-*~29",
	"*-*-* 1.5:00", "daily Mars/Olympus", "daily Europe/Nowhere", "*-*-* 12", "12:", ":00",
	"* * * * *", "0 2 * * *", "@daily", "now", "today", "*-*-* 00:00:00.", "*-*-*-* 00:00",
	"2026-01-01 00:00:00 00:00", "*~01~01", "*-*-1,,2", "*-*-1..", "1..2..3:00", "*-*-* 00:00:4294967296",
	"*-*-* 99999999999999999999:00", "UTC", "daily UTC UTC",
}

// systemdCalendar is what `systemd-analyze calendar` says of one event.
type systemdCalendar struct {
	valid      bool
	normalized string
	// elapses are the next iterations, formatted as it prints them (UTC),
	// or "never".
	elapses []string
}

const analyzeIterations = 4

func analyzeCalendar(t *testing.T, bin, expr string, base time.Time) systemdCalendar {
	t.Helper()
	cmd := exec.Command(bin, "calendar", "--iterations="+strconv.Itoa(analyzeIterations),
		"--base-time=@"+strconv.FormatInt(base.Unix(), 10), "--", expr)
	// Local time is UTC, so that systemd and the parser agree on what a
	// local zone abbreviation and a printed time are.
	cmd.Env = append(os.Environ(), "TZ=UTC", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("systemd-analyze calendar %q: %v", expr, err)
	}
	var out systemdCalendar
	if err != nil {
		if !strings.Contains(stderr.String(), "Failed to parse calendar specification") {
			t.Fatalf("systemd-analyze calendar %q failed for another reason: %v: %s", expr, err, stderr.String())
		}
		return out
	}
	out.valid = true
	for _, line := range strings.Split(stdout.String(), "\n") {
		key, value, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		switch {
		case key == "Normalized form":
			out.normalized = value
		case key == "Next elapse" || strings.HasPrefix(key, "Iter. #"):
			out.elapses = append(out.elapses, value)
		}
	}
	return out
}

// ourElapses are the parser's next iterations after base, formatted as
// systemd-analyze prints them in UTC (whole seconds).
func ourElapses(c *Calendar, base time.Time) []string {
	var out []string
	at := base
	for i := 0; i < analyzeIterations; i++ {
		next, ok := c.Next(at, time.UTC)
		if !ok {
			if i == 0 {
				out = append(out, "never")
			}
			break
		}
		out = append(out, next.UTC().Format("Mon 2006-01-02 15:04:05")+" UTC")
		at = next
	}
	return out
}

// TestCalendarAgreesWithSystemd holds the parser to systemd-analyze over the
// corpus: the same events accepted, the same normalized form, and the same
// next elapses from two base times (one in winter, one in summer, for the
// zones' daylight saving time).
func TestCalendarAgreesWithSystemd(t *testing.T) {
	bin := systemdAnalyze(t)
	if len(calendarCorpus) < 60 {
		t.Fatalf("the corpus has %d events; keep at least 60", len(calendarCorpus))
	}
	bases := []time.Time{
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 7, 15, 13, 45, 30, 0, time.UTC),
	}
	accepted, rejected := 0, 0
	for _, expr := range calendarCorpus {
		t.Run(expr, func(t *testing.T) {
			ours, err := ParseCalendar(expr)
			for i, base := range bases {
				want := analyzeCalendar(t, bin, expr, base)
				if (err == nil) != want.valid {
					t.Fatalf("ParseCalendar(%q) error = %v, systemd accepts it: %t", expr, err, want.valid)
				}
				if !want.valid {
					if i == 0 {
						rejected++
					}
					return
				}
				if i == 0 {
					accepted++
				}
				if got := ours.String(); got != want.normalized {
					t.Errorf("normalized %q, systemd %q", got, want.normalized)
				}
				if got := ourElapses(ours, base); strings.Join(got, "|") != strings.Join(want.elapses, "|") {
					t.Errorf("from %s: next elapses %q, systemd %q", base.Format(time.RFC3339), got, want.elapses)
				}
			}
		})
	}
	if accepted < 20 || rejected < 20 {
		t.Errorf("the corpus has %d valid and %d invalid events; keep at least 20 of each", accepted, rejected)
	}
}

func TestCalendarZone(t *testing.T) {
	for expr, want := range map[string]string{
		"daily": "", "daily UTC": "UTC", "daily utc": "UTC", "daily Europe/Paris": "Europe/Paris",
		"Mon 12:00 Etc/UTC": "Etc/UTC", "@0": "UTC",
	} {
		c, err := ParseCalendar(expr)
		if err != nil {
			t.Fatalf("ParseCalendar(%q): %v", expr, err)
		}
		if c.Zone() != want {
			t.Errorf("ParseCalendar(%q).Zone() = %q, want %q", expr, c.Zone(), want)
		}
	}
}

// TestCalendarNextInZone checks Next in a zone given by the caller (the
// timer's zone, not written in the event) across a change to summer time:
// 02:30 does not exist in Paris on 29 March 2026.
func TestCalendarNextInZone(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCalendar("*-*-* 02:30")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 28, 12, 0, 0, 0, paris)
	var got []string
	for i := 0; i < 2; i++ {
		next, ok := c.Next(at, paris)
		if !ok {
			t.Fatal("never elapses")
		}
		got = append(got, next.Format(time.RFC3339))
		at = next
	}
	want := []string{"2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("next = %v, want %v (the 29th's 02:30 does not exist)", got, want)
	}
}

// FuzzParseCalendar: the parser never panics, an accepted event's normalized
// form parses back to itself, and Next ends.
func FuzzParseCalendar(f *testing.F) {
	for _, expr := range calendarCorpus {
		f.Add(expr)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := ParseCalendar(expr)
		if err != nil {
			return
		}
		norm := c.String()
		again, err := ParseCalendar(norm)
		if err != nil {
			t.Fatalf("%q normalizes to %q, which does not parse: %v", expr, norm, err)
		}
		if again.String() != norm {
			t.Fatalf("%q normalizes to %q, then to %q", expr, norm, again.String())
		}
		if next, ok := c.Next(base, time.UTC); ok && !next.After(base) {
			t.Fatalf("%q: next %v is not after %v", expr, next, base)
		}
	})
}
