package schedule

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	// The IANA database is compiled in, so that --time-zone is checked, and
	// the next run computed, the same on a machine without /usr/share/zoneinfo
	// and in the image, which has none.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"
)

// ParseCron parses a CronJob schedule with the parser kube-apiserver
// validates it with and the CronJob controller runs it with (robfig/cron's
// standard parser), and refuses what the API refuses besides: a TZ= or
// CRON_TZ= prefix (the time zone belongs in spec.timeZone), and a schedule
// that never fires, such as 30 February.
func ParseCron(spec string) (cron.Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("it is empty")
	}
	if strings.Contains(spec, "TZ") {
		return nil, errors.New("a time zone in the schedule (TZ= or CRON_TZ=) is refused by the CronJob API")
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, err
	}
	// robfig/cron gives up after five years and returns the zero time.
	if s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, errors.New("it never fires (no such date)")
	}
	return s, nil
}

// validTimeZonePart is what kube-apiserver accepts in each part of a
// CronJob's timeZone (IANA naming rules, digits and + tolerated).
var validTimeZonePart = regexp.MustCompile(`^[A-Za-z.\-_0-9+]{1,14}$`)

// LoadTimeZone checks a CronJob time zone as kube-apiserver does and loads
// it: an IANA name such as Europe/Paris or UTC; never Local, which would
// mean the controller's own zone.
func LoadTimeZone(name string) (*time.Location, error) {
	if name == "" {
		return nil, errors.New("it is empty")
	}
	if strings.EqualFold(name, "Local") {
		return nil, errors.New("Local means the controller's own zone, which the CronJob API refuses")
	}
	for _, part := range strings.Split(name, "/") {
		if part == "." || part == ".." || strings.HasPrefix(part, "-") || !validTimeZonePart.MatchString(part) {
			return nil, errors.New("not an IANA time zone name")
		}
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, errors.New("no such time zone in the IANA database")
	}
	return loc, nil
}

// NextRun returns the first time after now at which the schedule fires in
// the time zone, as the CronJob controller computes it.
func NextRun(schedule, timeZone string, now time.Time) (time.Time, error) {
	s, err := ParseCron(schedule)
	if err != nil {
		return time.Time{}, err
	}
	loc, err := LoadTimeZone(timeZone)
	if err != nil {
		return time.Time{}, err
	}
	return s.Next(now.In(loc)), nil
}

// digestRef is REPOSITORY[:TAG]@sha256:HEX, the form that names one image
// whatever is pushed later.
var digestRef = regexp.MustCompile(`^[a-z0-9]+([._\-/:][a-zA-Z0-9._\-]+)*@sha256:[a-f0-9]{64}$`)

// CheckImage accepts only an image pinned by digest: a scheduled job must
// run the hcpsnap that was reviewed, not whatever a tag points to on the
// day it runs.
func CheckImage(ref string) error {
	if ref == "" {
		return errors.New("it is empty")
	}
	repo, digest, found := strings.Cut(ref, "@")
	if !found {
		return errors.New("it is not pinned by digest")
	}
	if !strings.HasPrefix(digest, "sha256:") || len(digest) != len("sha256:")+64 {
		return fmt.Errorf("%q is not a sha256 digest (sha256: and 64 hex digits)", digest)
	}
	if repo == "" || !digestRef.MatchString(ref) {
		return errors.New("it is not an image reference of the form REPOSITORY@sha256:DIGEST")
	}
	return nil
}
