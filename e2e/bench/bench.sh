#!/usr/bin/env bash
# The benchmark behind `make bench`: hcpsnap's backup against the manual
# runbook (runbook.sh) and against the machine's limits, on the local
# environment, at several sizes of the hosted etcd.
#
# For each size in BENCH_SIZES (MiB of etcd data; default "256 1024") it starts
# a fresh environment with ETCD_DATA_MB=size, then:
#   - the limits: `etcdctl snapshot save` alone in etcd-0 (timed inside the pod)
#     and `aws s3 cp` of the same snapshot from local disk to MinIO; as a
#     diagnostic, `kubectl exec cat` of the snapshot out of the pod;
#   - BENCH_RUNS (default 3) runs each of hcpsnap and the runbook, alternating
#     (the order swaps every run), plus `hcpsnap restore --verify` of each backup;
#   - as many runs of `hcpsnap backup --hold-api-until-saved`, the runbook's
#     literal downtime, whose upload reads a complete file: the throughput of
#     hcpsnap's upload path, compared with `aws s3 cp`.
# Every figure is the median of the runs. Results: a markdown table on stdout
# and in $BENCH_OUT/results.md, all figures and raw runs in $BENCH_OUT/results.json
# (raw runs also in $BENCH_OUT/runs.ndjson). One more run per size, not in the
# medians, is profiled: hcpsnap's CPU profile (cpu-SIZE.pprof) and the CPU time
# of every process, appended to results.md as "Where the time goes".
# The environment is stopped at the end (and refused if one is already running).
#
# Usage: bench.sh HCPSNAP_BIN LOCALENV_BIN     (run from the repository root)
set -euo pipefail

hcpsnap=$(realpath "$1")
localenv=$(realpath "$2")
sizes=${BENCH_SIZES:-256 1024}
runs=${BENCH_RUNS:-3}
out=${BENCH_OUT:-bench}
envfile=${LOCALENV_DIR:-.localenv}/env
here=$(dirname "$(realpath "$0")")
render=e2e/testdata/render-none.yaml

log() { printf '\033[1mbench:\033[0m %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

if "$localenv" running 2>/dev/null; then
  echo "an environment is running: run 'make env-down' first" >&2
  exit 1
fi
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; "$localenv" down >&2 || true' EXIT
runs_file=$out/runs.ndjson # one JSON object per measured run, kept to re-summarize
: >"$runs_file"

# record KIND SIZE RUN JSON-FIELDS...: appends one run to the raw results.
record() {
  local kind=$1 size=$2 run=$3
  shift 3
  jq -cn --arg kind "$kind" --argjson size "$size" --argjson run "$run" "$@" \
    '$ARGS.named | del(.kind, .size, .run) | {kind: $kind, size: $size, run: $run} + map_values(tonumber)' \
    >>"$runs_file"
}

# limit_snapshot SIZE RUN: `etcdctl snapshot save` alone, timed inside the pod.
# The file stays for limit_exec.
limit_snapshot() {
  local seconds
  seconds=$(kubectl exec -n "$cpns" etcd-0 -c etcd -- sh -c '
    f=/var/lib/data/bench-limit.db; rm -f "$f"
    s=$(date +%s.%N)
    ETCDCTL_API=3 /usr/bin/etcdctl --cacert /etc/etcd/tls/etcd-ca/ca.crt \
      --cert /etc/etcd/tls/client/etcd-client.crt --key /etc/etcd/tls/client/etcd-client.key \
      --endpoints localhost:2379 snapshot save "$f" >/dev/null 2>&1
    e=$(date +%s.%N); echo "$e - $s" | bc')
  record limit-snapshot "$1" "$2" --arg seconds "$seconds"
}

# limit_exec SIZE RUN: a diagnostic, not a target: how fast `kubectl exec cat`
# streams the snapshot out of the pod through the apiserver, the path of
# hcpsnap's upload. Bytes are counted because the simulated node may drop the
# last frames of a long stream (e2e/README.md).
limit_exec() {
  local t0 seconds bytes f=/var/lib/data/bench-limit.db
  t0=$(now)
  bytes=$(kubectl exec -n "$cpns" etcd-0 -c etcd -- cat "$f" | wc -c)
  seconds=$(since "$t0")
  kubectl exec -n "$cpns" etcd-0 -c etcd -- rm -f "$f"
  record limit-exec "$1" "$2" --arg seconds "$seconds" --arg bytes "$bytes"
}

# limit_upload SIZE RUN FILE: `aws s3 cp` of a local snapshot file to MinIO.
limit_upload() {
  local t0 seconds
  t0=$(now)
  aws s3 cp --only-show-errors "$3" "s3://$HCPSNAP_BUCKET/bench/limit/$2.db"
  seconds=$(since "$t0")
  aws s3 rm --only-show-errors "s3://$HCPSNAP_BUCKET/bench/limit/$2.db"
  record limit-upload "$1" "$2" --arg seconds "$seconds" --arg bytes "$(stat -c %s "$3")"
}

# run_hcpsnap KIND SIZE RUN [FLAGS...]: one backup, its events, peak RSS, then
# restore --verify. KIND hcpsnap is the default backup (the API comes back once
# etcd has fixed the snapshot's revision, the upload reads the file as it
# grows); hcpsnap-hold adds --hold-api-until-saved, so its upload reads a
# complete file: the throughput of hcpsnap's upload path alone.
run_hcpsnap() {
  local kind=$1 size=$2 run=$3
  shift 3
  local ev=$tmp/$kind-$size-$run.ndjson t0 e2e rss manifest restore
  t0=$(now)
  /usr/bin/time -f '%M' -o "$tmp/rss" "$hcpsnap" -o json backup "$@" >"$ev" 2>"$tmp/hcpsnap.log" ||
    { cat "$tmp/hcpsnap.log" >&2; return 1; }
  e2e=$(since "$t0")
  rss=$(tail -n 1 "$tmp/rss")
  manifest=$(jq -r 'select(.message_type == "summary") | .manifest' "$ev")
  t0=$(now)
  "$hcpsnap" restore --from "$manifest" -f "$render" --verify --out "$tmp/cluster.yaml" 2>"$tmp/restore.log" ||
    { cat "$tmp/restore.log" >&2; return 1; }
  restore=$(since "$t0")
  rm -f "$tmp/cluster.yaml"
  aws s3 rm --only-show-errors --recursive "s3://$HCPSNAP_BUCKET/backups/"
  step() { jq -s --arg s "$1" 'map(select(.message_type == "step_done" and .step == $s))[0].seconds' "$ev"; }
  # Downtime twice: hcpsnap's own figure, and the sum of the steps that span it.
  record "$kind" "$size" "$run" --arg e2e "$e2e" --arg rss_kib "$rss" --arg restore_verify "$restore" \
    --arg downtime "$(jq -s 'map(select(.message_type == "summary"))[0].downtimeSeconds' "$ev")" \
    --arg downtime_events "$(jq -s 'map(select(.message_type == "step_done" and
        (.step == "scale-down-apiservers" or .step == "snapshot-save" or .step == "scale-up-apiservers"))
        | .seconds) | add' "$ev")" \
    --arg snapshot_save "$(step snapshot-save)" --arg upload "$(step upload-snapshot)" \
    --arg snapshot_to_s3 "$(jq -s 'map(select(.message_type == "step_done" and
        (.step == "snapshot-save" or .step == "scale-up-apiservers" or .step == "resume-reconciliation" or .step == "upload-snapshot"))
        | .seconds) | add' "$ev")" \
    --arg bytes "$(jq -s 'map(select(.message_type == "summary"))[0].bytes' "$ev")"
}

# cpu_by_process: CPU ticks (user and system, with reaped children) of every
# process alive now, summed by command name (spaces made underscores).
cpu_by_process() {
  local f rest
  for f in /proc/[0-9]*/stat; do
    rest=$(cat "$f" 2>/dev/null) || continue
    local comm=${rest#*(}
    comm=${comm%)*}
    rest=${rest##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "${comm// /_} $((${12} + ${13} + ${14} + ${15}))"
  done | awk '{t[$1] += $2} END {for (k in t) print k, t[k]}' | sort
}

# profile_run SIZE: one more --hold-api-until-saved backup, not in the
# medians, with hcpsnap's CPU profile and the CPU time every process of the
# machine spent meanwhile: where the time of a backup goes. Writes
# $BENCH_OUT/profile-SIZE.md and cpu-SIZE.pprof.
profile_run() {
  local size=$1 prof=$out/cpu-$1.pprof hz wall user sys
  hz=$(getconf CLK_TCK)
  cpu_by_process >"$tmp/cpu.before"
  HCPSNAP_CPU_PROFILE=$prof /usr/bin/time -f '%e %U %S' -o "$tmp/time" \
    "$hcpsnap" -o json backup --hold-api-until-saved >"$tmp/profile.ndjson" 2>"$tmp/hcpsnap.log" ||
    { cat "$tmp/hcpsnap.log" >&2; return 1; }
  cpu_by_process >"$tmp/cpu.after"
  aws s3 rm --only-show-errors --recursive "s3://$HCPSNAP_BUCKET/backups/"
  read -r wall user sys <"$tmp/time"
  {
    echo "## Where the time goes at $size MiB"
    echo
    echo "One more \`backup --hold-api-until-saved\`, not in the medians: $wall s on $(nproc) cores. CPU seconds of"
    echo "every process meanwhile (the bench's own shells left out; etcdctl runs detached in the pod and is counted"
    echo "with whichever process reaped it):"
    echo
    echo "| process | CPU (s) |"
    echo "| --- | ---: |"
    echo "| hcpsnap | $(echo "$user + $sys" | bc) |"
    join -a2 -e0 -o 0,1.2,2.2 "$tmp/cpu.before" "$tmp/cpu.after" |
      awk -v hz="$hz" '$1 != "bash" && $1 != "bench.sh" && $1 != "time" { d = ($3 - $2) / hz; if (d >= 0.2) printf "| %s | %.1f |\n", $1, d }' |
      sort -t '|' -k3 -nr
    echo
    echo "Steps (s): $(jq -r 'select(.message_type == "step_done") | "\(.step) \(.seconds * 100 | round / 100)"' "$tmp/profile.ndjson" | paste -sd, - | sed 's/,/, /g')."
    echo
    echo "hcpsnap's CPU by function (\`go tool pprof -top\`, first rows):"
    echo
    echo '```'
    go tool pprof -top -nodecount=12 "$hcpsnap" "$prof" 2>/dev/null | sed -n '/flat%/,$p'
    echo '```'
    echo
  } >"$out/profile-$size.md"
}

# run_peer SIZE RUN: one pass of the manual runbook.
run_peer() {
  local t0 e2e marks
  t0=$(now)
  marks=$("$here/runbook.sh" "bench/peer/$1-$2.db" "$tmp/key-$1-$2.json" 2>"$tmp/runbook.log") ||
    { cat "$tmp/runbook.log" >&2; return 1; }
  e2e=$(since "$t0")
  m() { sed -n "s/^BENCH $1=//p" <<<"$marks"; }
  # Keep one peer snapshot as the local file of the upload limit.
  if [[ ! -f "$tmp/snapshot-$1.db" ]]; then
    aws s3 cp --only-show-errors "s3://$HCPSNAP_BUCKET/bench/peer/$1-$2.db" "$tmp/snapshot-$1.db"
  fi
  aws s3 rm --only-show-errors "s3://$HCPSNAP_BUCKET/bench/peer/$1-$2.db"
  rm -f "$tmp/key-$1-$2.json"
  record peer "$1" "$2" --arg e2e "$e2e" --arg downtime "$(echo "$(m down_end) - $(m down_start)" | bc)" \
    --arg snapshot_save "$(m snapshot_seconds)" --arg upload "$(m upload_seconds)" --arg bytes "$(m snapshot_bytes)"
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for size in $sizes; do
  log "size $size MiB: starting the environment"
  ETCD_DATA_MB=$size "$localenv" up >"$tmp/env.log" 2>&1 || { cat "$tmp/env.log" >&2; exit 1; }
  # shellcheck disable=SC1090
  source "$envfile"
  cpns="$HCPSNAP_NAMESPACE-$HCPSNAP_CLUSTER"
  for ((i = 1; i <= runs; i++)); do
    log "size $size MiB, run $i/$runs"
    limit_snapshot "$size" "$i"
    limit_exec "$size" "$i"
    if ((i % 2)); then run_hcpsnap hcpsnap "$size" "$i"; run_peer "$size" "$i"
    else run_peer "$size" "$i"; run_hcpsnap hcpsnap "$size" "$i"; fi
    run_hcpsnap hcpsnap-hold "$size" "$i" --hold-api-until-saved
  done
  log "size $size MiB: profiling one more run"
  profile_run "$size"
  for ((i = 1; i <= runs; i++)); do limit_upload "$size" "$i" "$tmp/snapshot-$size.db"; done
  rm -f "$tmp/snapshot-$size.db"
  "$localenv" down >&2
done

machine=$(jq -n --arg nproc "$(nproc)" --arg mem "$(free -m | awk '/^Mem:/ {print $2}')" \
  --arg kernel "$(uname -sr)" --arg cpu "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)" \
  '{nproc: ($nproc | tonumber), memoryMiB: ($mem | tonumber), kernel: $kernel, cpu: $cpu}')
jq -s --arg date "$started" --argjson machine "$machine" --arg hcpsnap_version "$("$hcpsnap" version 2>&1 | head -n 1)" \
  -f "$here/summarize.jq" "$runs_file" >"$out/results.json"
{
  jq -r -f "$here/markdown.jq" "$out/results.json"
  for size in $sizes; do echo; cat "$out/profile-$size.md"; done
} | tee "$out/results.md"
