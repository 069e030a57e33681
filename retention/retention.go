package retention

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Policy is what a user asked to keep. The zero Policy is empty, and an
// empty policy is refused: it would keep nothing but the newest backup.
type Policy struct {
	Last    int
	Hourly  int
	Daily   int
	Weekly  int
	Monthly int
	// Within keeps every backup younger than this, measured from the
	// newest backup's time.
	Within time.Duration
}

// Flag names of the policy, used in messages and in the rules of decisions.
const (
	RuleLast    = "keep-last"
	RuleHourly  = "keep-hourly"
	RuleDaily   = "keep-daily"
	RuleWeekly  = "keep-weekly"
	RuleMonthly = "keep-monthly"
	RuleWithin  = "keep-within"
)

// ErrEmpty is the error of a policy that keeps nothing.
var ErrEmpty = errors.New("the retention policy is empty: give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly or --keep-within")

// Empty reports whether the policy asks to keep nothing.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Within == 0
}

// Validate refuses negative counts and durations, then an empty policy.
func (p Policy) Validate() error {
	for _, c := range []struct {
		name string
		n    int
	}{{RuleLast, p.Last}, {RuleHourly, p.Hourly}, {RuleDaily, p.Daily}, {RuleWeekly, p.Weekly}, {RuleMonthly, p.Monthly}} {
		if c.n < 0 {
			return fmt.Errorf("--%s %d is negative: give a count of 0 or more", c.name, c.n)
		}
	}
	if p.Within < 0 {
		return fmt.Errorf("--%s %s is negative: give a duration such as 72h or 14d", RuleWithin, FormatDuration(p.Within))
	}
	if p.Empty() {
		return ErrEmpty
	}
	return nil
}

// String is the policy as flags, for logs and reports.
func (p Policy) String() string {
	var parts []string
	for _, c := range []struct {
		name string
		n    int
	}{{RuleLast, p.Last}, {RuleHourly, p.Hourly}, {RuleDaily, p.Daily}, {RuleWeekly, p.Weekly}, {RuleMonthly, p.Monthly}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("--%s %d", c.name, c.n))
		}
	}
	if p.Within > 0 {
		parts = append(parts, "--"+RuleWithin+" "+FormatDuration(p.Within))
	}
	return strings.Join(parts, " ")
}

// ParseDuration reads a --keep-within value: a Go duration (72h, 90m) that
// may start with whole days (14d, 1d12h), since retention is counted in
// days more often than in hours.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("--%s %q is not a duration: use hours, minutes or days such as 72h, 90m, 14d or 1d12h", RuleWithin, s)
	rest := strings.TrimSpace(s)
	var d time.Duration
	neg := strings.HasPrefix(rest, "-")
	rest = strings.TrimPrefix(rest, "-")
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		days, err := strconv.ParseUint(rest[:i], 10, 16)
		if err != nil {
			return 0, bad
		}
		d = time.Duration(days) * 24 * time.Hour
		rest = rest[i+1:]
	}
	if rest != "" {
		h, err := time.ParseDuration(rest)
		if err != nil || h < 0 {
			return 0, bad
		}
		d += h
	} else if d == 0 && !strings.Contains(s, "d") {
		return 0, bad
	}
	if neg {
		d = -d
	}
	return d, nil
}

// FormatDuration writes a duration the way ParseDuration reads it, with
// whole days as days: 72h0m0s is "3d", 36h is "1d12h".
func FormatDuration(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	days := d / (24 * time.Hour)
	rest := d % (24 * time.Hour)
	var b strings.Builder
	b.WriteString(sign)
	if days > 0 {
		fmt.Fprintf(&b, "%dd", days)
	}
	if rest > 0 || days == 0 {
		s := rest.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		b.WriteString(s)
	}
	return b.String()
}

// State is what the caller found in one backup folder.
type State int

const (
	// Verified: the manifest reads and the snapshot is present and is the
	// manifest's. Only verified backups take part in the policy.
	Verified State = iota
	// Incomplete: no usable backup (manifest missing or unreadable,
	// snapshot missing or not the manifest's). Backup.Reason says which.
	Incomplete
	// Deleting: an earlier prune began to remove the folder (its tombstone
	// is there); the removal is finished whatever the policy.
	Deleting
)

// Backup is one backup folder as the policy sees it.
type Backup struct {
	// ID names the folder (its key prefix); it is only carried.
	ID string
	// Time is the backup's time: the UTC timestamp of its folder, which
	// the run chose when it started.
	Time  time.Time
	State State
	// Reason says why an Incomplete folder is not a usable backup.
	Reason string
	// Run is the ID of an unfinished backup run that writes this folder
	// (from the cluster's run annotation); such a folder is always kept.
	Run string
}

// Action is what happens to a folder.
type Action int

const (
	// Keep the folder.
	Keep Action = iota
	// Remove the folder.
	Remove
	// Finish an interrupted removal.
	Finish
)

// String is the action as prune reports it.
func (a Action) String() string {
	switch a {
	case Remove:
		return "remove"
	case Finish:
		return "finish-removal"
	}
	return "keep"
}

// Decision is the fate of one folder and the rules that decided it.
type Decision struct {
	Backup Backup
	Action Action
	Rules  []string
}

// DefaultIncompleteGuard is how young an incomplete folder is always kept:
// a backup run writes its snapshot and key bundle before its manifest, so a
// run in progress is an incomplete folder, and no run lasts a day.
const DefaultIncompleteGuard = 24 * time.Hour

// Options are the safety settings around a policy.
type Options struct {
	Policy Policy
	// IncludeIncomplete removes incomplete folders older than Guard.
	IncludeIncomplete bool
	// Guard is the age under which an incomplete folder is always kept
	// (DefaultIncompleteGuard when 0).
	Guard time.Duration
	// Now is the time ages are measured at.
	Now time.Time
}

// Apply decides the fate of every folder of one cluster. The result is in
// the order of backups, newest first; the input may be in any order. Apply
// refuses an invalid or empty policy.
func Apply(opts Options, backups []Backup) ([]Decision, error) {
	if err := opts.Policy.Validate(); err != nil {
		return nil, err
	}
	guard := opts.Guard
	if guard <= 0 {
		guard = DefaultIncompleteGuard
	}
	sorted := append([]Backup(nil), backups...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.After(sorted[j].Time) })
	out := make([]Decision, len(sorted))
	for i, b := range sorted {
		out[i] = Decision{Backup: b}
	}

	var verified []*Decision
	for i := range out {
		d := &out[i]
		switch d.Backup.State {
		case Deleting:
			d.Action = Finish
			d.Rules = []string{"interrupted removal: its tombstone is there"}
		case Incomplete:
			age := opts.Now.Sub(d.Backup.Time)
			switch {
			case d.Backup.Run != "":
				d.Rules = []string{fmt.Sprintf("incomplete: %s; run %s in progress writes it", d.Backup.Reason, d.Backup.Run)}
			case age < guard:
				d.Rules = []string{fmt.Sprintf("incomplete: %s; younger than %s, may be a backup in progress", d.Backup.Reason, FormatDuration(guard))}
			case opts.IncludeIncomplete:
				d.Action = Remove
				d.Rules = []string{fmt.Sprintf("incomplete: %s; --include-incomplete", d.Backup.Reason)}
			default:
				d.Rules = []string{fmt.Sprintf("incomplete: %s; kept without --include-incomplete", d.Backup.Reason)}
			}
		default:
			verified = append(verified, d)
		}
	}
	keepPolicy(opts.Policy, verified)
	if len(verified) > 0 {
		newest := verified[0]
		newest.Rules = append([]string{"newest verified"}, newest.Rules...)
	}
	for _, d := range verified {
		if len(d.Rules) == 0 && d.Backup.Run != "" {
			d.Rules = []string{fmt.Sprintf("run %s in progress writes it", d.Backup.Run)}
		}
		if len(d.Rules) == 0 {
			d.Action = Remove
			d.Rules = []string{"no rule keeps it"}
		}
	}
	return out, nil
}

// bucket is one periodic rule: the period of a time, how many periods to
// keep, and the period of the last backup it kept.
type bucket struct {
	rule   string
	count  int
	period func(time.Time) string
	last   string
	kept   int
}

// keepPolicy adds the policy's rules to the verified backups, newest first,
// as restic's ApplyPolicy does: a periodic rule keeps a backup when its
// period differs from that of the last backup the rule kept.
func keepPolicy(p Policy, verified []*Decision) {
	buckets := []*bucket{
		{rule: RuleLast, count: p.Last, period: func(t time.Time) string { return t.Format(time.RFC3339Nano) }},
		{rule: RuleHourly, count: p.Hourly, period: func(t time.Time) string { return t.UTC().Format("2006-01-02T15") }},
		{rule: RuleDaily, count: p.Daily, period: func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
		{rule: RuleWeekly, count: p.Weekly, period: func(t time.Time) string {
			y, w := t.UTC().ISOWeek()
			return fmt.Sprintf("%04d-W%02d", y, w)
		}},
		{rule: RuleMonthly, count: p.Monthly, period: func(t time.Time) string { return t.UTC().Format("2006-01") }},
	}
	var cutoff time.Time
	if len(verified) > 0 && p.Within > 0 {
		cutoff = verified[0].Backup.Time.Add(-p.Within)
	}
	for i, d := range verified {
		for _, b := range buckets {
			if b.kept >= b.count {
				continue
			}
			// keep-last counts backups, not periods: two with the same
			// time are two backups.
			v := b.period(d.Backup.Time)
			if b.rule == RuleLast {
				v = strconv.Itoa(i)
			}
			if v == b.last {
				continue
			}
			b.last = v
			b.kept++
			d.Rules = append(d.Rules, fmt.Sprintf("%s %d/%d", b.rule, b.kept, b.count))
		}
		if p.Within > 0 && !d.Backup.Time.Before(cutoff) {
			d.Rules = append(d.Rules, "within "+FormatDuration(p.Within)+" of the newest")
		}
		if len(d.Rules) > 0 {
			d.Action = Keep
		}
	}
}
