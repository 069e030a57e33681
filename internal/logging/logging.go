package logging

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/charmbracelet/log"
)

// Formats accepted by --log-format.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// Levels accepted by --log-level, from the most to the least verbose.
var Levels = []string{"debug", "info", "warn", "error"}

// Validate checks a level and a format without building anything, so that
// option validation stays free of side effects.
func Validate(level, format string) error {
	if _, err := log.ParseLevel(level); err != nil || !contains(Levels, level) {
		return fmt.Errorf("--log-level %q is not a level: use one of %s", level, strings.Join(Levels, ", "))
	}
	if format != FormatText && format != FormatJSON {
		return fmt.Errorf("--log-format %q is not a format: use %s or %s", format, FormatText, FormatJSON)
	}
	return nil
}

// New returns a logger writing to w at level in format. Text logs carry a
// short local time, JSON logs an RFC3339 UTC one, so that CI systems can
// order them.
func New(w io.Writer, level, format string) (*log.Logger, error) {
	if err := Validate(level, format); err != nil {
		return nil, err
	}
	lvl, _ := log.ParseLevel(level)
	opts := log.Options{Level: lvl, ReportTimestamp: true, TimeFormat: time.TimeOnly}
	if format == FormatJSON {
		opts.Formatter = log.JSONFormatter
		opts.TimeFormat = time.RFC3339
		opts.TimeFunction = func(t time.Time) time.Time { return t.UTC() }
	}
	return log.NewWithOptions(w, opts), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
