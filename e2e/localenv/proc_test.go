package localenv

import (
	"os"
	"testing"
	"time"
)

func TestStartAndStopSession(t *testing.T) {
	c := Config{Dir: t.TempDir()}
	// A shell whose child ignores SIGTERM: stopAll must still end both.
	d := daemon{name: "sleeper", bin: "/bin/sh", args: []string{"-c", "trap '' TERM; sleep 300 & wait"}}
	if err := c.start(d); err != nil {
		t.Fatal(err)
	}
	pid, err := c.pid("sleeper")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(sessionMembers(pid)) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(sessionMembers(pid)); n < 2 {
		t.Fatalf("session %d has %d processes, want 2", pid, n)
	}
	if !c.alive("sleeper") {
		t.Fatal("daemon not alive after start")
	}
	if err := c.stopAll(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := sessionMembers(pid); len(got) != 0 {
		t.Fatalf("processes %v left behind", got)
	}
	if _, err := os.Stat(c.path("pids", "sleeper.pid")); !os.IsNotExist(err) {
		t.Fatalf("pid file left behind: %v", err)
	}
}
