package management

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file is a parser of systemd's calendar events (systemd.time(7), the
// syntax of a timer's OnCalendar=), written to accept and reject exactly
// what systemd 252 does, normalize an event as `systemd-analyze calendar`
// prints it, and compute its next elapses. The tests hold it to
// systemd-analyze over a corpus of events.

// The years a calendar event may name, as systemd bounds them: nothing
// elapses after maxYear.
const (
	minYear = 1970
	maxYear = 2199
)

// usecPerSec is the unit of the seconds component, which systemd keeps in
// microseconds so that it may have a fraction.
const usecPerSec = 1_000_000

// maxComponents bounds a list (a,b,c...) of one field, as systemd does.
const maxComponents = 240

// allWeekdays is the bit set of Monday (bit 0) to Sunday (bit 6).
const allWeekdays = 1<<7 - 1

// component is one element of a field's list: start, or start..stop, each
// optionally repeated every repeat. stop is -1 when there is no range; repeat
// is 0 when there is no repetition.
type component struct {
	start, stop, repeat int
}

// Calendar is a parsed systemd calendar event.
type Calendar struct {
	// weekdays is a bit set (Monday = bit 0); -1 matches every day.
	weekdays int
	// A nil field matches every value ("*").
	year, month, day, hour, minute []component
	// usec is the seconds field in microseconds; never nil.
	usec []component
	// endOfMonth counts days from the end of the month ("~").
	endOfMonth bool
	// utc is set for a trailing " UTC"; zone holds any other trailing
	// time zone name.
	utc  bool
	zone string
}

// errCalendar is the one error of a calendar that systemd rejects; the
// caller says which input was wrong.
var errCalendar = errors.New("not a systemd calendar event")

// ParseCalendar parses a calendar event as systemd does, with the shorthands
// (minutely, hourly, daily, weekly, monthly, yearly, annually, quarterly,
// semiannually and their aliases) and an optional trailing time zone.
func ParseCalendar(s string) (*Calendar, error) {
	c := &Calendar{}
	p := c.cutZone(s)
	if p == "" {
		return nil, errCalendar
	}
	if !c.shorthand(p) {
		rest, err := c.parseWeekdays(p)
		if err != nil {
			return nil, err
		}
		rest, timestamp, err := c.parseDate(rest)
		if err != nil {
			return nil, err
		}
		if !timestamp {
			if rest, err = c.parseTime(rest); err != nil {
				return nil, err
			}
		}
		if rest != "" {
			return nil, errCalendar
		}
	}
	c.normalize()
	if !c.valid() {
		return nil, errCalendar
	}
	return c, nil
}

// cutZone takes a trailing time zone off s: " UTC" (in any case), or a last
// word that names a time zone. The test runs systemd with TZ=UTC, so the
// local zone's abbreviations, which systemd also accepts, are UTC too.
func (c *Calendar) cutZone(s string) string {
	if len(s) >= 4 && strings.EqualFold(s[len(s)-4:], " UTC") {
		c.utc = true
		return s[:len(s)-4]
	}
	if i := strings.LastIndexByte(s, ' '); i >= 0 && isZoneName(s[i+1:]) {
		c.zone = s[i+1:]
		return s[:i]
	}
	return s
}

// isZoneName reports whether name is a time zone that systemd would take
// from the end of an event: a file of the zone database.
func isZoneName(name string) bool {
	if name == "" || name == "Local" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_+/", r)) {
			return false
		}
	}
	_, err := time.LoadLocation(name)
	return err == nil
}

// shorthand fills c for one of systemd's named events.
func (c *Calendar) shorthand(p string) bool {
	zero := []component{{0, -1, 0}}
	one := []component{{1, -1, 0}}
	consts := func(v ...int) []component {
		out := make([]component, len(v))
		for i, x := range v {
			out[i] = component{x, -1, 0}
		}
		return out
	}
	switch strings.ToLower(p) {
	case "minutely":
		c.usec = zero
	case "hourly":
		c.minute, c.usec = zero, zero
	case "daily":
		c.hour, c.minute, c.usec = zero, zero, zero
	case "monthly":
		c.day, c.hour, c.minute, c.usec = one, zero, zero, zero
	case "annually", "yearly", "anually":
		c.month, c.day, c.hour, c.minute, c.usec = one, one, zero, zero, zero
	case "weekly":
		c.weekdays = 1
		c.hour, c.minute, c.usec = zero, zero, zero
	case "quarterly":
		c.month, c.day, c.hour, c.minute, c.usec = consts(1, 4, 7, 10), one, zero, zero, zero
	case "biannually", "bi-annually", "semiannually", "semi-annually":
		c.month, c.day, c.hour, c.minute, c.usec = consts(1, 7), one, zero, zero, zero
	default:
		return false
	}
	return true
}

var weekdayNames = []struct {
	name string
	nr   int
}{
	{"Monday", 0}, {"Mon", 0}, {"Tuesday", 1}, {"Tue", 1}, {"Wednesday", 2}, {"Wed", 2},
	{"Thursday", 3}, {"Thu", 3}, {"Friday", 4}, {"Fri", 4}, {"Saturday", 5}, {"Sat", 5},
	{"Sunday", 6}, {"Sun", 6},
}

// parseWeekdays reads a leading list of weekdays and ranges (Mon..Fri, or
// the old Mon-Fri), if there is one, and returns the rest.
func (c *Calendar) parseWeekdays(p string) (string, error) {
	rangeFrom := -1
	for first := true; ; first = false {
		found := -1
		for _, d := range weekdayNames {
			if len(p) < len(d.name) || !strings.EqualFold(p[:len(d.name)], d.name) {
				continue
			}
			if rest := p[len(d.name):]; rest != "" && !strings.ContainsRune("-.,  ", rune(rest[0])) {
				return "", errCalendar
			}
			found = d.nr
			p = p[len(d.name):]
			break
		}
		if found < 0 {
			if first {
				return p, nil
			}
			return "", errCalendar
		}
		c.weekdays |= 1 << found
		if rangeFrom >= 0 {
			if rangeFrom > found {
				return "", errCalendar
			}
			for j := rangeFrom + 1; j < found; j++ {
				c.weekdays |= 1 << j
			}
		}
		switch {
		case p == "":
			return p, nil
		case p[0] == ' ':
			return strings.TrimLeft(p, " "), nil
		case p[0] == '.':
			if rangeFrom >= 0 || len(p) < 2 || p[1] != '.' {
				return "", errCalendar
			}
			rangeFrom = found
			p = p[2:]
		case p[0] == '-':
			if rangeFrom >= 0 {
				return "", errCalendar
			}
			rangeFrom = found
			p = p[1:]
		case p[0] == ',':
			rangeFrom = -1
			p = p[1:]
		}
		// A trailing comma is allowed, an open range is not.
		if p == "" || p[0] == ' ' {
			if rangeFrom >= 0 {
				return "", errCalendar
			}
			return strings.TrimLeft(p, " "), nil
		}
	}
}

// parseDate reads [YEAR-]MONTH-DAY (or ~DAY from the end of the month) or
// @TIMESTAMP, if there is one. timestamp is set for the latter, which also
// sets the time.
func (c *Calendar) parseDate(p string) (rest string, timestamp bool, err error) {
	if p == "" {
		return p, false, nil
	}
	if p[0] == '@' {
		n, r, ok := leadingNumber(p[1:])
		if !ok || n > math.MaxInt64/usecPerSec {
			return "", false, errCalendar
		}
		t := time.Unix(int64(n), 0).UTC()
		set := func(v int) []component { return []component{{v, -1, 0}} }
		c.year, c.month, c.day = set(t.Year()), set(int(t.Month())), set(t.Day())
		c.hour, c.minute, c.usec = set(t.Hour()), set(t.Minute()), set(t.Second()*usecPerSec)
		c.utc = true
		return r, true, nil
	}
	first, t, err := parseChain(p, false)
	if err != nil {
		return "", false, err
	}
	if t == "" || t[0] == ':' {
		// A time, not a date: read again by parseTime.
		return p, false, nil
	}
	switch t[0] {
	case '~':
		c.endOfMonth = true
	case '-':
	default:
		return "", false, errCalendar
	}
	second, t, err := parseChain(t[1:], false)
	if err != nil {
		return "", false, err
	}
	if t == "" || t[0] == ' ' {
		c.month, c.day = first, second
		return strings.TrimLeft(t, " "), false, nil
	}
	if c.endOfMonth {
		return "", false, errCalendar
	}
	switch t[0] {
	case '~':
		c.endOfMonth = true
	case '-':
	default:
		return "", false, errCalendar
	}
	third, t, err := parseChain(t[1:], false)
	if err != nil {
		return "", false, err
	}
	if t != "" && t[0] != ' ' {
		return "", false, errCalendar
	}
	c.year, c.month, c.day = first, second, third
	return strings.TrimLeft(t, " "), false, nil
}

// parseTime reads HOUR:MINUTE[:SECOND]; no time at all is 00:00:00.
func (c *Calendar) parseTime(p string) (string, error) {
	zero := []component{{0, -1, 0}}
	if p == "" {
		c.hour, c.minute, c.usec = zero, zero, zero
		return p, nil
	}
	h, t, err := parseChain(p, false)
	if err != nil {
		return "", err
	}
	if t == "" || t[0] != ':' {
		return "", errCalendar
	}
	m, t, err := parseChain(t[1:], false)
	if err != nil {
		return "", err
	}
	c.hour, c.minute = h, m
	if t == "" {
		c.usec = zero
		return t, nil
	}
	if t[0] != ':' {
		return "", errCalendar
	}
	s, t, err := parseChain(t[1:], true)
	if err != nil {
		return "", err
	}
	if t != "" {
		return "", errCalendar
	}
	c.usec = s
	return t, nil
}

// parseChain reads one field: "*", or a comma-separated list of components.
// usec reads seconds with an optional fraction, into microseconds. "*" is
// nil, except for seconds, where it is every whole second.
func parseChain(p string, usec bool) ([]component, string, error) {
	if strings.HasPrefix(p, "*") {
		if usec {
			return []component{{0, -1, usecPerSec}}, p[1:], nil
		}
		return nil, p[1:], nil
	}
	var chain []component
	for {
		if len(chain) > maxComponents {
			return nil, "", errCalendar
		}
		start, e, err := parseDecimal(p, usec)
		if err != nil {
			return nil, "", err
		}
		cc := component{start: start, stop: -1}
		if strings.HasPrefix(e, "..") {
			if cc.stop, e, err = parseDecimal(e[2:], usec); err != nil {
				return nil, "", err
			}
			cc.repeat = 1
			if usec {
				cc.repeat = usecPerSec
			}
		}
		if strings.HasPrefix(e, "/") {
			if cc.repeat, e, err = parseDecimal(e[1:], usec); err != nil {
				return nil, "", err
			}
			if cc.repeat == 0 {
				return nil, "", errCalendar
			}
		} else if cc.start > math.MaxInt32-cc.repeat || usec && cc.stop >= 0 && cc.start+cc.repeat > cc.stop {
			// A range of seconds without a repetition steps by one
			// second, so it must span one at least.
			return nil, "", errCalendar
		}
		if e != "" && !strings.ContainsRune(" ,-~:", rune(e[0])) {
			return nil, "", errCalendar
		}
		chain = append(chain, cc)
		if e == "" || e[0] != ',' {
			return chain, e, nil
		}
		p = e[1:]
	}
}

// parseDecimal reads a number; with usec, seconds with an optional fraction
// (rounded to microseconds) into microseconds. It must fit an int32.
func parseDecimal(p string, usec bool) (int, string, error) {
	if p == "" || p[0] < '0' || p[0] > '9' {
		return 0, "", errCalendar
	}
	v, e, ok := leadingNumber(p)
	if !ok {
		return 0, "", errCalendar
	}
	if usec {
		if v > math.MaxUint64/usecPerSec {
			return 0, "", errCalendar
		}
		v *= usecPerSec
		// One "." is a decimal point, ".." a range.
		if len(e) >= 1 && e[0] == '.' && (len(e) < 2 || e[1] != '.') {
			frac, rest, ok := fraction(e[1:])
			if !ok {
				return 0, "", errCalendar
			}
			v += frac
			e = rest
		}
	}
	if v > math.MaxInt32 {
		return 0, "", errCalendar
	}
	return int(v), e, nil
}

// leadingNumber reads the decimal digits at the start of p.
func leadingNumber(p string) (uint64, string, bool) {
	i := 0
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, p, false
	}
	v, err := strconv.ParseUint(p[:i], 10, 64)
	if err != nil {
		return 0, p, false
	}
	return v, p[i:], true
}

// fraction reads the digits of a fraction of a second as microseconds: six
// digits, padded with zeros, rounded up on a seventh digit of 5 or more;
// more digits are read and dropped.
func fraction(p string) (uint64, string, bool) {
	var v uint64
	i := 0
	for ; i < 6; i++ {
		if i >= len(p) || p[i] < '0' || p[i] > '9' {
			if i == 0 {
				return 0, p, false
			}
			break
		}
		v = v*10 + uint64(p[i]-'0')
	}
	for j := i; j < 6; j++ {
		v *= 10
	}
	if i < len(p) && p[i] >= '5' && p[i] <= '9' {
		v++
	}
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		i++
	}
	return v, p[i:], true
}

// normalize does what systemd does before it checks an event: UTC is a
// flag, all or no weekdays is every day, a "~" without a day is dropped,
// two-digit years are 19xx or 20xx, a range ends on a repetition (and is
// a single value when it holds one), and each list is sorted without
// duplicates.
func (c *Calendar) normalize() {
	if c.zone == "UTC" {
		c.utc, c.zone = true, ""
	}
	if c.weekdays <= 0 || c.weekdays >= allWeekdays {
		c.weekdays = -1
	}
	if c.endOfMonth && c.day == nil {
		c.endOfMonth = false
	}
	for i := range c.year {
		y := &c.year[i]
		for _, v := range []*int{&y.start, &y.stop} {
			switch {
			case *v >= 0 && *v < 70:
				*v += 2000
			case *v >= 70 && *v < 100:
				*v += 1900
			}
		}
	}
	for _, ch := range []*[]component{&c.year, &c.month, &c.day, &c.hour, &c.minute, &c.usec} {
		*ch = normalizeChain(*ch)
	}
}

func normalizeChain(ch []component) []component {
	for i := range ch {
		cc := &ch[i]
		if cc.stop > cc.start && cc.repeat > 0 {
			cc.stop -= (cc.stop - cc.start) % cc.repeat
		}
		// A range that holds one value is that value.
		if cc.stop > cc.start && cc.repeat > 0 && cc.start+cc.repeat > cc.stop || cc.start == cc.stop {
			cc.stop, cc.repeat = -1, 0
		}
	}
	slices.SortFunc(ch, func(a, b component) int {
		if a.start != b.start {
			return a.start - b.start
		}
		if a.stop != b.stop {
			return a.stop - b.stop
		}
		return a.repeat - b.repeat
	})
	return slices.Compact(ch)
}

// valid checks each field's bounds as systemd does: a repetition must fit
// at least once, a range must hold two values, and "~" counts at most 28
// days back.
func (c *Calendar) valid() bool {
	return chainValid(c.year, minYear, maxYear, false) &&
		chainValid(c.month, 1, 12, false) &&
		chainValid(c.day, 1, 31, c.endOfMonth) &&
		chainValid(c.hour, 0, 23, false) &&
		chainValid(c.minute, 0, 59, false) &&
		chainValid(c.usec, 0, 60*usecPerSec-1, false)
}

func chainValid(ch []component, from, to int, endOfMonth bool) bool {
	if endOfMonth {
		to -= 3
	}
	for _, cc := range ch {
		if cc.start < from || cc.start > to || cc.repeat > to-from {
			return false
		}
		if cc.stop >= 0 {
			if cc.stop < from || cc.stop > to || cc.start+cc.repeat > cc.stop {
				return false
			}
		} else if endOfMonth && cc.start-cc.repeat < from || !endOfMonth && cc.start+cc.repeat > to {
			return false
		}
	}
	return true
}

// Zone is the time zone written at the end of the event: "UTC", a zone
// name, or "" for none (the machine's local time).
func (c *Calendar) Zone() string {
	if c.utc {
		return "UTC"
	}
	return c.zone
}

// String is the event in systemd's normalized form, as `systemd-analyze
// calendar` prints it.
func (c *Calendar) String() string {
	var b strings.Builder
	if c.weekdays > 0 && c.weekdays <= allWeekdays {
		b.WriteString(formatWeekdays(c.weekdays))
		b.WriteByte(' ')
	}
	formatChain(&b, 4, c.year, false)
	b.WriteByte('-')
	formatChain(&b, 2, c.month, false)
	if c.endOfMonth {
		b.WriteByte('~')
	} else {
		b.WriteByte('-')
	}
	formatChain(&b, 2, c.day, false)
	b.WriteByte(' ')
	formatChain(&b, 2, c.hour, false)
	b.WriteByte(':')
	formatChain(&b, 2, c.minute, false)
	b.WriteByte(':')
	formatChain(&b, 2, c.usec, true)
	if z := c.Zone(); z != "" {
		b.WriteString(" " + z)
	}
	return b.String()
}

var weekdayAbbr = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

// formatWeekdays writes runs of three days or more as a range, shorter runs
// as a list.
func formatWeekdays(bits int) string {
	var parts []string
	for x := 0; x < 7; {
		if bits&(1<<x) == 0 {
			x++
			continue
		}
		end := x
		for end+1 < 7 && bits&(1<<(end+1)) != 0 {
			end++
		}
		switch end - x {
		case 0:
			parts = append(parts, weekdayAbbr[x])
		case 1:
			parts = append(parts, weekdayAbbr[x], weekdayAbbr[end])
		default:
			parts = append(parts, weekdayAbbr[x]+".."+weekdayAbbr[end])
		}
		x = end + 1
	}
	return strings.Join(parts, ",")
}

func formatChain(b *strings.Builder, width int, ch []component, usec bool) {
	d := 1
	if usec {
		d = usecPerSec
	}
	if ch == nil || usec && len(ch) == 1 && ch[0].start == 0 && ch[0].repeat == usecPerSec && ch[0].stop < 0 {
		b.WriteByte('*')
		return
	}
	for i, cc := range ch {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(b, "%0*d", width, cc.start/d)
		if cc.start%d > 0 {
			fmt.Fprintf(b, ".%06d", cc.start%d)
		}
		if cc.stop > 0 {
			fmt.Fprintf(b, "..%0*d", width, cc.stop/d)
			if cc.stop%d > 0 {
				fmt.Fprintf(b, ".%06d", cc.stop%d)
			}
		}
		if cc.repeat > 0 && !(cc.stop > 0 && cc.repeat == d) {
			fmt.Fprintf(b, "/%d", cc.repeat/d)
		}
		if cc.repeat%d > 0 {
			fmt.Fprintf(b, ".%06d", cc.repeat%d)
		}
	}
}

// matches reports whether v is in the field ch (nil: every value).
func matches(ch []component, v int) bool {
	if ch == nil {
		return true
	}
	for _, cc := range ch {
		if v == cc.start {
			return true
		}
		if cc.repeat > 0 && v > cc.start && (v-cc.start)%cc.repeat == 0 && (cc.stop < 0 || v <= cc.stop) {
			return true
		}
	}
	return false
}

// matchesDay is matches for the day field, counting from the month's end
// with "~": ~1 is the last day, and a range ~7..1 is the last seven days.
func (c *Calendar) matchesDay(day, last int) bool {
	if !c.endOfMonth || c.day == nil {
		return matches(c.day, day)
	}
	for _, cc := range c.day {
		start, stop := last+1-cc.start, -1
		if cc.stop >= 0 {
			start, stop = last+1-cc.stop, last+1-cc.start
		}
		if matches([]component{{start, stop, cc.repeat}}, day) {
			return true
		}
	}
	return false
}

// firstUsec is the first value of the seconds field that is at least from,
// in microseconds, or -1.
func (c *Calendar) firstUsec(from int) int {
	best := -1
	for _, cc := range c.usec {
		v := cc.start
		if v < from {
			if cc.repeat == 0 {
				continue
			}
			v = cc.start + (from-cc.start+cc.repeat-1)/cc.repeat*cc.repeat
			if cc.stop >= 0 && v > cc.stop {
				continue
			}
		}
		if v >= 60*usecPerSec {
			continue
		}
		if best < 0 || v < best {
			best = v
		}
	}
	return best
}

// Next is the first time strictly after after at which the event elapses,
// read in the event's own zone if it has one, else in loc; ok is false when
// it never elapses again (by the year 2199). A wall time that a daylight
// saving change skips does not elapse.
func (c *Calendar) Next(after time.Time, loc *time.Location) (next time.Time, ok bool) {
	switch {
	case c.utc:
		loc = time.UTC
	case c.zone != "":
		if l, err := time.LoadLocation(c.zone); err == nil {
			loc = l
		}
	}
	from := after.Add(time.Microsecond).In(loc)
	y, m, d := from.Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // a calendar day, not an instant
	for day.Year() <= maxYear {
		y, m, d := day.Date()
		switch {
		case !matches(c.year, y):
			day = time.Date(y+1, 1, 1, 0, 0, 0, 0, time.UTC)
			continue
		case !matches(c.month, int(m)):
			day = time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		last := time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
		wd := (int(day.Weekday()) + 6) % 7
		if c.matchesDay(d, last) && (c.weekdays < 0 || c.weekdays&(1<<wd) != 0) {
			if t, found := c.nextInDay(y, m, d, from, loc); found {
				return t, true
			}
		}
		day = day.AddDate(0, 0, 1)
	}
	return time.Time{}, false
}

// nextInDay is the first elapse on the calendar day y-m-d in loc at or after
// from.
func (c *Calendar) nextInDay(y int, m time.Month, d int, from time.Time, loc *time.Location) (time.Time, bool) {
	fy, fm, fd := from.Date()
	sameDay := fy == y && fm == m && fd == d
	for h := 0; h < 24; h++ {
		if !matches(c.hour, h) || sameDay && h < from.Hour() {
			continue
		}
		for mi := 0; mi < 60; mi++ {
			if !matches(c.minute, mi) {
				continue
			}
			lower := 0
			if sameDay && h == from.Hour() {
				if mi < from.Minute() {
					continue
				}
				if mi == from.Minute() {
					lower = from.Second()*usecPerSec + from.Nanosecond()/1000
				}
			}
			u := c.firstUsec(lower)
			if u < 0 {
				continue
			}
			t := time.Date(y, m, d, h, mi, 0, 0, loc).Add(time.Duration(u) * time.Microsecond)
			if ty, tm, td := t.Date(); ty != y || tm != m || td != d || t.Hour() != h || t.Minute() != mi {
				continue // skipped by a daylight saving change
			}
			return t, true
		}
	}
	return time.Time{}, false
}
