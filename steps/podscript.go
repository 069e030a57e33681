package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hcpsnap/hcpsnap/internal/kube"
)

// The snapshot is written by `etcdctl snapshot save` running in the
// background inside the member's container, so that the API can come back
// while etcd is still streaming it and the upload can read it as it grows.
//
// etcd opens the read transaction a snapshot is taken from before it sends
// the first byte (maintenanceServer.Snapshot), and etcdctl writes what it
// receives to <path>.part before renaming it to <path>. The first byte in
// <path>.part therefore proves that the snapshot's revision is fixed: writes
// after that point are not in it, exactly as if the API had stayed down.
//
// Beside <path>, the writer keeps three files the scripts below share:
//
//	<path>.pid  the PID of etcdctl, to stop it
//	<path>.log  etcdctl's output
//	<path>.rc   etcdctl's exit status, written (atomically) when it ended
//
// A detached process in a container outlives the exec that started it, as
// `nohup cmd &` does under kubectl exec; it ends with the container.

// writerExitFailed is the exit status the scripts use for a failure that
// reading again cannot cure (etcdctl failed, or the file stopped growing).
const writerExitFailed = 3

// writerErrorFn is a shell function: writer_error PATH prints etcdctl's
// error line from its log.
const writerErrorFn = `writer_error() {
  { grep -i '^error' "$1.log" || tail -n 1 "$1.log"; } 2>/dev/null | tail -n 1 | tr -d '\r'
}
`

// stopWriterFn is a shell function: stop_writer PATH kills a writer still
// running and waits (at most 5 s) until it has recorded its end, so that a
// late <path>.rc cannot appear after the files are removed. The PID is
// signalled only while it is still an etcdctl snapshot: after a container
// restart the number may belong to another process.
const stopWriterFn = `stop_writer() {
  [ -e "$1.pid" ] && [ ! -e "$1.rc" ] || return 0
  pid=$(cat "$1.pid")
  grep -qa snapshot "/proc/$pid/cmdline" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  i=0; while [ ! -e "$1.rc" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
}
`

// startSnapshotScript: sh -c SCRIPT sh PATH UNTIL LIMIT ETCDCTL-ARGV...
// It stops and removes what an earlier attempt left, starts the writer, and
// waits until UNTIL: "first-byte" (the snapshot's revision is fixed) or
// "done" (the file is complete). A writer that fails before then makes it
// print etcdctl's error and exit writerExitFailed; so does one that has not
// got there after LIMIT seconds, which it stops first.
const startSnapshotScript = stopWriterFn + writerErrorFn + `p=$1 until=$2 limit=$3; shift 3
stop_writer "$p"
rm -f "$p" "$p.part" "$p.log" "$p.pid" "$p.rc" "$p.rc.tmp"
(
  "$@" snapshot save "$p" >"$p.log" 2>&1 </dev/null &
  echo $! >"$p.pid"
  wait $!
  echo $? >"$p.rc.tmp" && mv "$p.rc.tmp" "$p.rc"
) >/dev/null 2>&1 </dev/null &
n=0
while :; do
  if [ -e "$p.rc" ]; then
    [ "$(cat "$p.rc")" = 0 ] && exit 0
    echo "etcdctl exited with status $(cat "$p.rc"): $(writer_error "$p")" >&2
    exit 3
  fi
  if [ "$until" = first-byte ] && { [ -s "$p.part" ] || [ -s "$p" ]; }; then exit 0; fi
  n=$((n+1))
  if [ $n -ge $((limit*20)) ]; then
    stop_writer "$p"
    echo "etcdctl snapshot save has not reached $until after ${limit}s: check the etcd member" >&2
    exit 3
  fi
  sleep 0.05
done
`

// probeSnapshotScript: sh -c SCRIPT sh PATH
// prints "running" while the writer runs, else "done STATUS SIZE" and, for a
// complete file, its last 32 bytes as `od -An -v -tx1` does; with no writer
// files at all it prints "missing".
const probeSnapshotScript = writerErrorFn + `p=$1
if [ -e "$p.rc" ]; then
  rc=$(cat "$p.rc")
  if [ "$rc" != 0 ]; then echo "done $rc -1"; writer_error "$p" >&2; exit 0; fi
  [ -e "$p" ] || { echo missing; exit 0; }
  echo "done 0 $(stat -c %s "$p")"
  tail -c 32 "$p" | od -An -v -tx1
elif [ -e "$p.pid" ] || [ -e "$p.part" ]; then
  echo running
else
  echo missing
fi
`

// rangeScript: sh -c SCRIPT sh PATH OFFSET LENGTH STALL
// streams LENGTH bytes from OFFSET of the snapshot, first waiting until the
// writer has written them or ended; it fails with writerExitFailed when the
// writer failed or the file has not grown for STALL seconds. When the writer
// ended, fewer bytes than asked mean the end of the file.
const rangeScript = writerErrorFn + `p=$1 off=$2 len=$3 stall=$4
need=$((off+len)) last=x still=0
while :; do
  if [ -e "$p.rc" ]; then
    if [ "$(cat "$p.rc")" != 0 ]; then echo "etcdctl snapshot save failed with status $(cat "$p.rc"): $(writer_error "$p")" >&2; exit 3; fi
    f=$p; break
  fi
  n=$(stat -c %s "$p.part" 2>/dev/null) || n=-1
  if [ "$n" -ge "$need" ]; then f=$p.part; break; fi
  if [ "$n" = "$last" ]; then still=$((still+1)); else still=0 last=$n; fi
  if [ $still -ge $((stall*20)) ]; then echo "the snapshot file has not grown for ${stall}s and etcdctl has not ended: check the etcd member" >&2; exit 3; fi
  sleep 0.05
done
[ -e "$f" ] || f=$p
tail -c +$((off+1)) "$f" | head -c "$len"
`

// cleanupScript: sh -c SCRIPT sh PATH stops the writer and removes its files.
const cleanupScript = stopWriterFn + `p=$1
stop_writer "$p"
rm -f "$p" "$p.part" "$p.log" "$p.pid" "$p.rc" "$p.rc.tmp"
`

// podPrograms are the programs that the scripts above and the steps' own
// execs run in the etcd container, besides etcdctl and etcdutl. Builtins of
// sh (kill, echo, [) are listed when the scripts rely on them: `command -v`
// finds a builtin as sh would. TestPodScriptsNeedOnlyPodPrograms runs every
// script with nothing else on its PATH.
var podPrograms = []string{"sh", "cat", "df", "grep", "head", "kill", "mv", "od", "rm", "sleep", "stat", "tail", "tr"}

// toolsScript: sh -c SCRIPT sh ETCDCTL ETCDUTL PROGRAM...
// checks in one exec that ETCDCTL and every PROGRAM exist and prints
// "missing NAME..." if any does not. Otherwise it prints "etcdutl yes" or
// "etcdutl no" and the first line of `etcdctl version`.
const toolsScript = `ctl=$1 utl=$2; shift 2
missing=
for p in "$ctl" "$@"; do
  case $p in
  /*) [ -f "$p" ] && [ -x "$p" ] || missing="$missing $p";;
  *) command -v "$p" >/dev/null 2>&1 || missing="$missing $p";;
  esac
done
if [ -n "$missing" ]; then echo "missing$missing"; exit 0; fi
if [ -f "$utl" ] && [ -x "$utl" ]; then echo "etcdutl yes"; else echo "etcdutl no"; fi
"$ctl" version 2>&1 | head -n 1
`

// podTools is what toolsScript found in the container.
type podTools struct {
	Missing []string
	Etcdutl bool
	// EtcdctlMajor and EtcdctlMinor are etcdctl's version; both 0 when its
	// output did not say.
	EtcdctlMajor, EtcdctlMinor int
	EtcdctlVersion             string
}

// parsePodTools reads toolsScript's output.
func parsePodTools(out string) (podTools, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[0])
	switch {
	case len(f) > 1 && f[0] == "missing":
		return podTools{Missing: f[1:]}, nil
	case len(f) != 2 || f[0] != "etcdutl":
		return podTools{}, fmt.Errorf("unexpected output %q", firstLine(out))
	}
	t := podTools{Etcdutl: f[1] == "yes"}
	if len(lines) > 1 {
		// "etcdctl version: 3.6.5"
		if v, ok := strings.CutPrefix(strings.TrimSpace(lines[1]), "etcdctl version:"); ok {
			t.EtcdctlVersion = strings.TrimSpace(v)
			parts := strings.SplitN(strings.TrimPrefix(t.EtcdctlVersion, "v"), ".", 3)
			if len(parts) >= 2 {
				major, err1 := strconv.Atoi(parts[0])
				minor, err2 := strconv.Atoi(parts[1])
				if err1 == nil && err2 == nil {
					t.EtcdctlMajor, t.EtcdctlMinor = major, minor
				}
			}
		}
	}
	return t, nil
}

// statusTool chooses what reads the snapshot's status: etcdutl when the
// container has it (etcd's tool for files since 3.5, the only one in 3.6),
// else etcdctl when it is a 3.x older than 3.6 and still has `snapshot
// status`. ok is false when neither can.
func (t podTools) statusTool() (tool string, ok bool) {
	switch {
	case t.Etcdutl:
		return StatusToolEtcdutl, true
	case t.EtcdctlMajor == 3 && t.EtcdctlMinor < 6:
		return StatusToolEtcdctl, true
	}
	return "", false
}

// writerState is what probeSnapshotScript reports.
type writerState struct {
	Running bool
	Missing bool
	Done    bool
	Status  int    // etcdctl's exit status, when Done
	Size    int64  // the complete file's size, when Done with status 0
	EtcdSum string // etcd's trailing SHA-256, when Done with status 0
	Error   string // etcdctl's error, when Done with another status
}

// failure returns the error of a writer that failed or whose files are
// gone, and nil for one that runs or wrote a complete file.
func (st writerState) failure(s *State, path string) error {
	switch {
	case st.Missing:
		return fmt.Errorf("snapshot %s is gone from pod %s/%s (was the pod restarted?): start a new backup", path, s.Out.HCPNamespace, s.Opts.Member)
	case st.Done && st.Status != 0:
		return fmt.Errorf("etcdctl snapshot save %s failed with status %d: %s", path, st.Status, st.Error)
	}
	return nil
}

// probeWriter reports on the snapshot writer of path.
func probeWriter(ctx context.Context, s *State, path string) (writerState, error) {
	var stdout, stderr bytes.Buffer
	if err := s.exec(ctx, []string{"sh", "-c", probeSnapshotScript, "sh", path}, &stdout, &stderr); err != nil {
		return writerState{}, fmt.Errorf("read the state of snapshot %s in pod %s: %w (%s)", path, s.Opts.Member, err, firstLine(stderr.String()))
	}
	st, err := parseWriterState(stdout.String())
	if err != nil {
		return st, fmt.Errorf("snapshot %s in pod %s: %w", path, s.Opts.Member, err)
	}
	st.Error = firstLine(stderr.String())
	return st, nil
}

// parseWriterState reads probeSnapshotScript's output.
func parseWriterState(out string) (writerState, error) {
	first, rest, _ := strings.Cut(strings.TrimSpace(out), "\n")
	f := strings.Fields(first)
	switch {
	case len(f) == 1 && f[0] == "running":
		return writerState{Running: true}, nil
	case len(f) == 1 && f[0] == "missing":
		return writerState{Missing: true}, nil
	case len(f) == 3 && f[0] == "done":
		status, err1 := strconv.Atoi(f[1])
		size, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			break
		}
		st := writerState{Done: true, Status: status, Size: size}
		if status != 0 {
			return st, nil
		}
		sum := strings.Join(strings.Fields(rest), "")
		if len(sum) != 64 || size < 32 {
			return st, errors.New("file too short to be an etcd snapshot")
		}
		st.EtcdSum = sum
		return st, nil
	}
	return writerState{}, fmt.Errorf("unexpected state %q", firstLine(out))
}

// writerFailed reports whether err is a script's writerExitFailed.
func writerFailed(err error) bool {
	var ee *kube.ExitError
	return errors.As(err, &ee) && ee.Code == writerExitFailed
}

// stallSeconds is how long a range read waits for a snapshot file that does
// not grow while etcdctl runs.
func (s *State) stallSeconds() string {
	d := s.Opts.WaitTimeout
	if d <= 0 {
		d = defaultWaitTimeout
	}
	return strconv.Itoa(int(max(d, time.Second) / time.Second))
}
