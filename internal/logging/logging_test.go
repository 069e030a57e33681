package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       string
	}{
		{"info", "text", ""},
		{"debug", "json", ""},
		{"verbose", "text", `--log-level "verbose"`},
		{"fatal", "text", `--log-level "fatal"`},
		{"info", "yaml", `--log-format "yaml"`},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			err := Validate(tt.level, tt.format)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestJSONLinesAndLevel(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "warn", FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.With("step", "preflight").Warn("shown", "pods", 3)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1: %q", len(lines), buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if rec["msg"] != "shown" || rec["step"] != "preflight" || rec["level"] != "warn" {
		t.Fatalf("unexpected record %v", rec)
	}
}
