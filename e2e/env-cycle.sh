#!/usr/bin/env bash
# Starts and stops the local environment N times in a row and fails when
# anything is left behind: `localenv down` checks for processes, mounts, loop
# devices and network namespaces itself, and this script checks again
# independently.
set -euo pipefail
localenv=$1
n=${2:-2}
: "${LOCALENV_DIR:?set LOCALENV_DIR}" "${LOCALENV_BIN_DIR:?set LOCALENV_BIN_DIR}"
for i in $(seq 1 "$n"); do
  echo "env-cycle $i/$n: up"
  "$localenv" up
  echo "env-cycle $i/$n: down"
  "$localenv" down
  if pgrep -af "$LOCALENV_DIR|$LOCALENV_BIN_DIR/"; then
    echo "env-cycle: processes left behind after down" >&2
    exit 1
  fi
  if grep -F "$LOCALENV_DIR" /proc/self/mountinfo; then
    echo "env-cycle: mounts left behind after down" >&2
    exit 1
  fi
  if grep -sF "$LOCALENV_DIR" /sys/block/loop*/loop/backing_file; then
    echo "env-cycle: loop devices left behind after down" >&2
    exit 1
  fi
done
echo "env-cycle: $n up/down cycles, nothing left behind"
