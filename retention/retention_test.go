package retention

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"
)

// history is a synthetic history of verified backups, newest first, with
// its ISO weeks and months noted: the expected keeps below are worked out
// by hand from these, not computed by the code under test.
var history = []struct{ id, at string }{
	{"A", "2026-03-10T12:00:00Z"}, // Tue, 2026-W11
	{"B", "2026-03-10T06:00:00Z"}, // Tue, 2026-W11
	{"C", "2026-03-09T23:30:00Z"}, // Mon, 2026-W11
	{"D", "2026-03-09T12:00:00Z"}, // Mon, 2026-W11
	{"E", "2026-03-08T12:00:00Z"}, // Sun, 2026-W10
	{"F", "2026-03-02T12:00:00Z"}, // Mon, 2026-W10
	{"G", "2026-03-01T12:00:00Z"}, // Sun, 2026-W09
	{"H", "2026-02-15T12:00:00Z"}, // Sun, 2026-W07
	{"I", "2026-01-31T23:00:00Z"}, // Sat, 2026-W05
	{"J", "2025-12-31T23:59:00Z"}, // Wed, 2026-W01 (ISO week of 2026), December 2025
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func backups(t testing.TB) []Backup {
	var bs []Backup
	for _, h := range history {
		bs = append(bs, Backup{ID: h.id, Time: mustTime(t, h.at)})
	}
	return bs
}

func kept(ds []Decision) string {
	var ids []string
	for _, d := range ds {
		if d.Action == Keep {
			ids = append(ids, d.Backup.ID)
		}
	}
	return strings.Join(ids, "")
}

// TestApplyPolicy is the table of expected keeps over the synthetic history.
func TestApplyPolicy(t *testing.T) {
	for _, c := range []struct {
		name   string
		policy Policy
		keep   string
	}{
		{"last 1", Policy{Last: 1}, "A"},
		{"last 3", Policy{Last: 3}, "ABC"},
		{"last more than there are", Policy{Last: 20}, "ABCDEFGHIJ"},
		{"hourly 3", Policy{Hourly: 3}, "ABC"},
		{"daily 3: the newest of each of the 3 newest days", Policy{Daily: 3}, "ACE"},
		{"weekly 3: ISO weeks 11, 10, 9", Policy{Weekly: 3}, "AEG"},
		{"weekly 6: week 1 of 2026 holds 2025-12-31", Policy{Weekly: 6}, "AEGHIJ"},
		{"monthly 3", Policy{Monthly: 3}, "AHI"},
		{"monthly 4 reaches December 2025", Policy{Monthly: 4}, "AHIJ"},
		{"within 2d of the newest, inclusive", Policy{Within: 48 * time.Hour}, "ABCDE"},
		{"within a second less", Policy{Within: 48*time.Hour - time.Second}, "ABCD"},
		{"within 1d12h", Policy{Within: 36 * time.Hour}, "ABCD"},
		{"daily 1 and monthly 2: rules add up", Policy{Daily: 1, Monthly: 2}, "AH"},
		{"last 2 and weekly 2", Policy{Last: 2, Weekly: 2}, "ABE"},
		{"hourly 2, daily 2, weekly 2, monthly 2", Policy{Hourly: 2, Daily: 2, Weekly: 2, Monthly: 2}, "ABCEH"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds, err := Apply(Options{Policy: c.policy, Now: mustTime(t, "2026-03-11T00:00:00Z")}, backups(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := kept(ds); got != c.keep {
				t.Errorf("kept %q, want %q", got, c.keep)
				for _, d := range ds {
					t.Logf("%s %s %v", d.Backup.ID, d.Action, d.Rules)
				}
			}
		})
	}
}

// TestRules checks the words a decision carries.
func TestRules(t *testing.T) {
	ds, err := Apply(Options{Policy: Policy{Hourly: 3, Daily: 3, Within: 36 * time.Hour}, Now: mustTime(t, "2026-03-11T00:00:00Z")}, backups(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"A": {"newest verified", "keep-hourly 1/3", "keep-daily 1/3", "within 1d12h of the newest"},
		"C": {"keep-hourly 3/3", "keep-daily 2/3", "within 1d12h of the newest"},
		"D": {"within 1d12h of the newest"},
		"E": {"keep-daily 3/3"},
		"F": {"no rule keeps it"},
	}
	for _, d := range ds {
		if w, ok := want[d.Backup.ID]; ok && !slices.Equal(d.Rules, w) {
			t.Errorf("%s: rules %q, want %q", d.Backup.ID, d.Rules, w)
		}
	}
}

// TestSafetyRules: the newest verified backup stays, incomplete folders are
// kept unless included and old enough, and a tombstoned folder is finished.
func TestSafetyRules(t *testing.T) {
	now := mustTime(t, "2026-03-11T00:00:00Z")
	bs := backups(t)
	bs[0] = Backup{ID: "A", Time: bs[0].Time, State: Incomplete, Reason: "manifest missing"} // 12h old: may be running
	bs[3] = Backup{ID: "D", Time: bs[3].Time, State: Incomplete, Reason: "manifest unreadable"}
	bs[5] = Backup{ID: "F", Time: bs[5].Time, State: Deleting}
	for _, c := range []struct {
		name    string
		opts    Options
		actions string // per backup A..J: k keep, r remove, f finish
	}{
		{"incomplete kept", Options{Policy: Policy{Last: 1}}, "kkrkrfrrrr"},
		{"incomplete included, the young one kept", Options{Policy: Policy{Last: 1}, IncludeIncomplete: true}, "kkrrrfrrrr"},
		{"a guard of 2d keeps D too", Options{Policy: Policy{Last: 1}, IncludeIncomplete: true, Guard: 48 * time.Hour}, "kkrkrfrrrr"},
		{"the tombstone wins over the policy", Options{Policy: Policy{Last: 10}}, "kkkkkfkkkk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Now = now
			ds, err := Apply(c.opts, bs)
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			for _, d := range ds {
				got.WriteByte(d.Action.String()[0])
			}
			if got.String() != c.actions {
				t.Errorf("actions %s, want %s", got.String(), c.actions)
				for _, d := range ds {
					t.Logf("%s %s %v", d.Backup.ID, d.Action, d.Rules)
				}
			}
			// B is the newest verified backup: A is incomplete.
			if ds[1].Rules[0] != "newest verified" {
				t.Errorf("B's rules %q do not start with newest verified", ds[1].Rules)
			}
		})
	}
}

// TestRunInProgress: a folder that an unfinished run writes is kept whatever
// its age, state or the policy, and says so.
func TestRunInProgress(t *testing.T) {
	now := mustTime(t, "2026-03-11T00:00:00Z")
	bs := backups(t)
	bs[3] = Backup{ID: "D", Time: bs[3].Time, State: Incomplete, Reason: "manifest missing", Run: "20260309T120000Z-0000abcd"} // 36h: past the guard
	bs[6].Run = "20260301T120000Z-0000abcd"                                                                                    // G: verified, no rule keeps it
	ds, err := Apply(Options{Policy: Policy{Last: 1}, IncludeIncomplete: true, Now: now}, bs)
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for _, d := range ds {
		got.WriteByte(d.Action.String()[0])
	}
	if want := "krrkrrkrrr"; got.String() != want {
		t.Errorf("actions %s, want %s", got.String(), want)
	}
	for _, i := range []int{3, 6} {
		if r := strings.Join(ds[i].Rules, "; "); !strings.Contains(r, "in progress") {
			t.Errorf("%s kept by %q, want the run in progress named", ds[i].Backup.ID, r)
		}
	}
}

// TestRefused: an empty policy, a negative count or duration are refused.
func TestRefused(t *testing.T) {
	for _, c := range []struct {
		p    Policy
		want string
	}{
		{Policy{}, "policy is empty"},
		{Policy{Within: 0, Last: 0}, "policy is empty"},
		{Policy{Last: -1}, "--keep-last -1 is negative"},
		{Policy{Daily: 2, Monthly: -3}, "--keep-monthly -3 is negative"},
		{Policy{Within: -time.Hour}, "--keep-within -1h is negative"},
	} {
		_, err := Apply(Options{Policy: c.p}, backups(t))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want %q", c.p, err, c.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"72h", 72 * time.Hour, true},
		{"14d", 14 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"-3h", -3 * time.Hour, true},
		{"0d", 0, true},
		{"", 0, false},
		{"d", 0, false},
		{"3days", 0, false},
		{"1w", 0, false},
		{"forever", 0, false},
		{"1d-3h", 0, false},
	} {
		got, err := ParseDuration(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%q", c.in)) {
			t.Errorf("error %q does not name the input", err)
		}
	}
	for d, want := range map[time.Duration]string{72 * time.Hour: "3d", 36 * time.Hour: "1d12h", 90 * time.Second: "1m30s",
		time.Hour: "1h", 0: "0s", 25*time.Hour + time.Minute: "1d1h1m"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := ParseDuration(FormatDuration(d)); err != nil || back != d {
			t.Errorf("ParseDuration(FormatDuration(%v)) = %v, %v", d, back, err)
		}
	}
}

// TestProperties applies random policies to random histories and checks
// the rules that must hold whatever the policy.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	now := mustTime(t, "2026-03-11T00:00:00Z")
	for round := 0; round < 2000; round++ {
		var bs []Backup
		for i, n := 0, rng.Intn(30); i < n; i++ {
			b := Backup{ID: fmt.Sprint(i), Time: now.Add(-time.Duration(rng.Int63n(int64(400 * 24 * time.Hour))))}
			switch rng.Intn(6) {
			case 0:
				b.State, b.Reason = Incomplete, "manifest missing"
			case 1:
				b.State = Deleting
			}
			bs = append(bs, b)
		}
		p := Policy{Last: rng.Intn(4), Hourly: rng.Intn(3), Daily: rng.Intn(8), Weekly: rng.Intn(5), Monthly: rng.Intn(13),
			Within: time.Duration(rng.Intn(3)) * 24 * time.Hour}
		if p.Empty() {
			p.Last = 1
		}
		opts := Options{Policy: p, Now: now, IncludeIncomplete: rng.Intn(2) == 0}
		ds, err := Apply(opts, bs)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != len(bs) {
			t.Fatalf("round %d: %d decisions for %d backups", round, len(ds), len(bs))
		}
		newest := -1
		for i, d := range ds {
			if i > 0 && d.Backup.Time.After(ds[i-1].Backup.Time) {
				t.Fatalf("round %d: decisions are not newest first", round)
			}
			if len(d.Rules) == 0 {
				t.Fatalf("round %d: %s has no rule", round, d.Backup.ID)
			}
			switch d.Backup.State {
			case Verified:
				if newest < 0 {
					newest = i
					if d.Action != Keep {
						t.Fatalf("round %d: the newest verified backup is %s (%v)", round, d.Action, d.Rules)
					}
				}
				if d.Action == Finish {
					t.Fatalf("round %d: a verified backup is finished", round)
				}
			case Deleting:
				if d.Action != Finish {
					t.Fatalf("round %d: a tombstoned folder is %s", round, d.Action)
				}
			case Incomplete:
				old := now.Sub(d.Backup.Time) >= DefaultIncompleteGuard
				if (d.Action == Remove) != (opts.IncludeIncomplete && old) {
					t.Fatalf("round %d: an incomplete folder of age %s is %s (include %v)", round, now.Sub(d.Backup.Time), d.Action, opts.IncludeIncomplete)
				}
			}
		}
		// keep-last N keeps the N newest verified backups.
		seen := 0
		for _, d := range ds {
			if d.Backup.State == Verified && seen < p.Last {
				seen++
				if d.Action != Keep {
					t.Fatalf("round %d: keep-last %d removes verified backup %d", round, p.Last, seen)
				}
			}
		}
	}
}
