#!/usr/bin/env bash
# The benchmark behind `make bench`: the two ways hcpsnap takes a snapshot,
# `backup --via stream` and `backup --via exec`, against the manual runbook
# (runbook.sh) and against the limits of their paths, on the local
# environment, at several sizes of the hosted etcd.
#
# For each size in BENCH_SIZES (MiB of etcd data; default "256 1024") it starts
# a fresh environment with ETCD_DATA_MB=size (and ETCD_VOLUME_MB=BENCH_VOLUME_MB
# when set; unset, localenv's default leaves room for one copy of the
# database), checks whether etcd-0's volume has room for a copy of the database
# (what --via exec and the runbook need: the database plus 10 %, hcpsnap's own
# rule), then BENCH_RUNS (default 3) times:
#   - the limits: `etcdctl snapshot save` alone inside etcd-0 (timed in the
#     pod); as a diagnostic, `kubectl exec cat` of that file out of the pod;
#     with stream, `etcdctl snapshot save` on this machine through
#     `kubectl port-forward` to etcd-0:2379 into a local file, the stream's own
#     path (etcdctl of the hosted etcd's version and kubectl, both from
#     .cache/bin);
#   - one run of each way of BENCH_WAYS (default "stream exec") and of the
#     runbook, in an order that rotates every run (with three of them, each
#     takes each place once in three runs), each backup followed by
#     `hcpsnap restore --verify` of it;
#   - with exec, one `backup --via exec --hold-api-until-saved`, the runbook's
#     literal downtime, whose upload reads a complete file: the throughput of
#     the exec way's upload path, compared with `aws s3 cp`.
# Without room for a copy, the runbook and the in-pod limits are skipped and
# --via exec is expected to refuse (exit 3): the refusal is recorded.
#
# Every figure is the median of the runs. Results: a markdown table on stdout
# and in $BENCH_OUT/results.md, all figures and raw runs in
# $BENCH_OUT/results.json (raw runs also in $BENCH_OUT/runs.ndjson). With
# BENCH_PROFILE=1 (the default), one more run per size and way, not in the
# medians, is profiled: hcpsnap's CPU profile (cpu-SIZE-WAY.pprof) and the CPU
# time of every process, appended to results.md as "Where the time goes".
# The environment is stopped at the end (and refused if one is already running).
#
# Usage: bench.sh HCPSNAP_BIN LOCALENV_BIN     (run from the repository root)
set -euo pipefail

hcpsnap=$(realpath "$1")
localenv=$(realpath "$2")
sizes=${BENCH_SIZES:-256 1024}
runs=${BENCH_RUNS:-3}
ways=${BENCH_WAYS:-stream exec}
volume_mb=${BENCH_VOLUME_MB:-}
profile=${BENCH_PROFILE:-1}
out=${BENCH_OUT:-bench}
envfile=${LOCALENV_DIR:-.localenv}/env
here=$(dirname "$(realpath "$0")")
render=e2e/testdata/render-none.yaml

log() { printf '\033[1mbench:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1mbench:\033[0m %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
has_way() { [[ " $ways " == *" $1 "* ]]; }

# The settings are checked before anything starts.
for w in $ways; do
  [[ $w == stream || $w == exec ]] || die "BENCH_WAYS=\"$ways\": '$w' is not a way of taking the snapshot: use stream, exec or both"
done
[[ -n ${ways// /} ]] || die "BENCH_WAYS is empty: use stream, exec or both"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$runs is not a number of runs: use 1 or more"
for s in $sizes; do
  [[ $s =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZES=\"$sizes\": '$s' is not a size in MiB: use whole numbers such as \"256 1024 4096\""
done
[[ -z $volume_mb || $volume_mb =~ ^[1-9][0-9]*$ ]] || die "BENCH_VOLUME_MB=$volume_mb is not a size in MiB: use a whole number, or leave it unset"
[[ $profile == 0 || $profile == 1 ]] || die "BENCH_PROFILE=$profile: use 1 to profile one more run per size and way, 0 not to"

# --via arrived with issue 11. A binary without it has only the exec way:
# measuring it that way is allowed and said; asking it for stream is an error.
# (The help is read whole first: grep -q stops reading at the first match,
# and under pipefail the writer's SIGPIPE would fail the test.)
backup_help=$("$hcpsnap" backup --help 2>&1)
if grep -q -- '--via' <<<"$backup_help"; then
  via_flag=true
else
  via_flag=false
  has_way stream && die "$hcpsnap has no --via flag, so 'backup --via stream' cannot be measured: build hcpsnap with --via stream|exec (issue 11), or run with BENCH_WAYS=exec to measure the exec way and the runbook only"
  log "$hcpsnap has no --via flag: the exec runs use its only way, without the flag"
fi
# via WAY: the flag that selects a way, when the binary has it.
via() { if $via_flag; then echo "--via=$1"; fi; }

if "$localenv" running 2>/dev/null; then
  echo "an environment is running: run 'make env-down' first" >&2
  exit 1
fi
mkdir -p "$out"
tmp=$(mktemp -d)
pf_pid=
cleanup() {
  if [[ -n $pf_pid ]]; then kill "$pf_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
  "$localenv" down >&2 || true
}
trap cleanup EXIT
runs_file=$out/runs.ndjson # one JSON object per measured run, kept to re-summarize
: >"$runs_file"

# record KIND SIZE RUN JSON-FIELDS...: appends one run to the raw results.
# Figures are numbers; a figure the run did not produce is null.
record() {
  local kind=$1 size=$2 run=$3
  shift 3
  jq -cn --arg kind "$kind" --argjson size "$size" --argjson run "$run" "$@" \
    '$ARGS.named | del(.kind, .size, .run) | {kind: $kind, size: $size, run: $run}
      + map_values(if . == "" or . == "null" then null else tonumber end)' \
    >>"$runs_file"
}

# check_room SIZE: whether etcd-0's volume has room for a copy of the
# database (free >= database + 10 %, the rule of hcpsnap's exec preflight);
# sets $room and records the figures.
check_room() {
  local free_kib db
  free_kib=$(kubectl exec -n "$cpns" etcd-0 -c etcd -- df -Pk /var/lib/data | awk 'NR == 2 {print $4}')
  db=$(kubectl exec -n "$cpns" etcd-0 -c etcd -- stat -c %s /var/lib/data/member/snap/db)
  [[ $free_kib =~ ^[0-9]+$ && $db =~ ^[0-9]+$ ]] ||
    die "cannot read the free space ($free_kib) or the database size ($db) of etcd-0 in $cpns"
  if ((free_kib * 1024 >= db + db / 10)); then room=true; else room=false; fi
  record volume "$1" 0 --arg free_bytes "$((free_kib * 1024))" --arg db_bytes "$db" --arg room "$($room && echo 1 || echo 0)"
  if ! $room; then
    log "etcd-0's volume has $((free_kib / 1024)) MiB free for a $((db >> 20)) MiB database: no room for a copy;" \
      "the runbook and the in-pod limits are skipped at $1 MiB and --via exec must refuse (unset BENCH_VOLUME_MB for room)"
  fi
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
# streams the snapshot out of the pod through the apiserver, the path of the
# exec way's upload. Bytes are counted because the simulated node may drop the
# last frames of a long stream (e2e/README.md).
limit_exec() {
  local t0 seconds bytes f=/var/lib/data/bench-limit.db
  t0=$(now)
  bytes=$(kubectl exec -n "$cpns" etcd-0 -c etcd -- cat "$f" | wc -c)
  seconds=$(since "$t0")
  kubectl exec -n "$cpns" etcd-0 -c etcd -- rm -f "$f"
  record limit-exec "$1" "$2" --arg seconds "$seconds" --arg bytes "$bytes"
}

# fetch_etcd_tls: what an operator takes from the cluster to run etcdctl on
# their machine: the client certificate and key from Secret etcd-client-tls,
# the CA from ConfigMap etcd-ca, into private files of the bench's temporary
# folder (removed at exit; never printed).
fetch_etcd_tls() {
  local d=$tmp/etcd-tls
  (
    umask 077
    mkdir -p "$d"
    kubectl get secret -n "$cpns" etcd-client-tls -o jsonpath='{.data.etcd-client\.crt}' | base64 -d >"$d/client.crt"
    kubectl get secret -n "$cpns" etcd-client-tls -o jsonpath='{.data.etcd-client\.key}' | base64 -d >"$d/client.key"
    kubectl get configmap -n "$cpns" etcd-ca -o jsonpath='{.data.ca\.crt}' >"$d/ca.crt"
  )
  local f
  for f in client.crt client.key ca.crt; do
    [[ -s $d/$f ]] || die "Secret etcd-client-tls or ConfigMap etcd-ca in $cpns gave an empty $f"
  done
}

# limit_portforward SIZE RUN: the baseline of the stream's transfer rate:
# `etcdctl snapshot save` on this machine through `kubectl port-forward` to
# etcd-0:2379 into a local file. The forward is opened first (kubectl prints
# its local port once the connection through the apiserver to the node is
# upgraded) and etcdctl alone is timed. The file is removed at once.
limit_portforward() {
  local pflog=$tmp/port-forward.log port='' t0 seconds bytes f=$tmp/portforward-snapshot.db i
  : >"$pflog"
  kubectl port-forward -n "$cpns" pod/etcd-0 :2379 >"$pflog" 2>&1 &
  pf_pid=$!
  for ((i = 0; i < 300; i++)); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9][0-9]*\) -> 2379$/\1/p' "$pflog")
    [[ -n $port ]] && break
    kill -0 "$pf_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    kill "$pf_pid" 2>/dev/null || true
    wait "$pf_pid" 2>/dev/null || true
    pf_pid=
    die "kubectl port-forward -n $cpns pod/etcd-0 :2379 did not start: $(tr '\n' ' ' <"$pflog")-- the baseline of --via stream needs the node agent to serve the kubelet's port-forward endpoint (issue 11)"
  fi
  rm -f "$f"
  t0=$(now)
  if ! "$ETCDCTL" --endpoints "https://localhost:$port" --cacert "$tmp/etcd-tls/ca.crt" \
    --cert "$tmp/etcd-tls/client.crt" --key "$tmp/etcd-tls/client.key" \
    snapshot save "$f" >"$tmp/etcdctl.log" 2>&1; then
    cat "$tmp/etcdctl.log" "$pflog" >&2
    die "$ETCDCTL snapshot save through kubectl port-forward (local port $port) failed"
  fi
  seconds=$(since "$t0")
  bytes=$(stat -c %s "$f")
  rm -f "$f"
  kill "$pf_pid" 2>/dev/null || true
  wait "$pf_pid" 2>/dev/null || true
  pf_pid=
  record limit-portforward "$1" "$2" --arg seconds "$seconds" --arg bytes "$bytes"
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

# span EVENTS FIRST LAST: seconds of the step_done events from the first step
# whose name matches the regular expression FIRST to the last one matching
# LAST, both included, in the order they ran; empty when either is missing.
# Steps in between (the API coming back) run while the snapshot streams, so
# the span is the wall time from its start to its end.
span() {
  jq -rs --arg first "$2" --arg last "$3" '
    map(select(.message_type == "step_done")) as $d
    | ($d | map(.step | test($first)) | index(true)) as $a
    | ($d | map(.step | test($last)) | rindex(true)) as $b
    | if $a == null or $b == null or $b < $a then "" else $d[$a:$b + 1] | map(.seconds // 0) | add end' "$1"
}

# run_hcpsnap KIND SIZE RUN FLAGS...: one backup, its events, peak RSS, then
# restore --verify. KIND is the way (stream, exec), or exec-hold for
# --hold-api-until-saved (its upload reads a complete file: the throughput of
# the exec way's upload path alone). A refusal (exit 3) of the exec way is
# recorded as exec-refused; any other failure stops the bench.
run_hcpsnap() {
  local kind=$1 size=$2 run=$3
  shift 3
  local ev=$tmp/$kind-$size-$run.ndjson t0 e2e rss manifest restore rc=0 transfer
  t0=$(now)
  /usr/bin/time -f '%M' -o "$tmp/rss" "$hcpsnap" -o json backup "$@" >"$ev" 2>"$tmp/hcpsnap.log" || rc=$?
  e2e=$(since "$t0")
  if ((rc == 3)) && [[ $kind == exec* ]]; then
    log "$kind at $size MiB refused (exit 3): $(tail -n 1 "$tmp/hcpsnap.log")"
    record exec-refused "$size" "$run" --arg exit_code 3
    return 0
  fi
  if ((rc != 0)); then
    cat "$tmp/hcpsnap.log" >&2
    die "hcpsnap backup $* ($kind, $size MiB, run $run) exited $rc"
  fi
  rss=$(tail -n 1 "$tmp/rss")
  manifest=$(jq -r 'select(.message_type == "summary") | .manifest' "$ev")
  [[ -n $manifest ]] || die "hcpsnap backup $* printed no summary event: see $ev"
  # From the snapshot's start (the step that opens it) to the object stored.
  transfer=$(span "$ev" '^snapshot|stream' 'upload|stream')
  [[ -n $transfer ]] ||
    die "$kind: no snapshot step followed by an upload step among hcpsnap's step_done events ($(jq -r 'select(.message_type == "step_done") | .step' "$ev" | paste -sd, -)): adapt span's patterns in bench.sh"
  t0=$(now)
  "$hcpsnap" restore --from "$manifest" -f "$render" --verify --out "$tmp/cluster.yaml" 2>"$tmp/restore.log" ||
    { cat "$tmp/restore.log" >&2; die "hcpsnap restore --verify of the $kind backup at $size MiB failed"; }
  restore=$(since "$t0")
  rm -f "$tmp/cluster.yaml"
  aws s3 rm --only-show-errors --recursive "s3://$HCPSNAP_BUCKET/backups/"
  step() { jq -rs --arg s "$1" 'map(select(.message_type == "step_done" and .step == $s))[0].seconds' "$ev"; }
  # Downtime twice: hcpsnap's own figure (every window, should a retry take
  # the API down again), and the span of the steps from scale-down to scale-up.
  record "$kind" "$size" "$run" --arg e2e "$e2e" --arg rss_kib "$rss" --arg restore_verify "$restore" \
    --arg downtime "$(jq -rs 'map(select(.message_type == "summary"))[0].downtimeSeconds' "$ev")" \
    --arg downtime_events "$(span "$ev" '^scale-down-apiservers$' '^scale-up-apiservers$')" \
    --arg snapshot_save "$(step snapshot-save)" --arg upload "$(step upload-snapshot)" \
    --arg snapshot_to_s3 "$transfer" \
    --arg bytes "$(jq -rs 'map(select(.message_type == "summary"))[0].bytes' "$ev")"
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

# profile_run SIZE WAY: one more backup of the way, not in the medians, with
# hcpsnap's CPU profile and the CPU time every process of the machine spent
# meanwhile: where the time of a backup goes. Writes
# $BENCH_OUT/profile-SIZE-WAY.md and cpu-SIZE-WAY.pprof.
profile_run() {
  local size=$1 way=$2 prof=$out/cpu-$1-$2.pprof hz wall user sys rc=0
  hz=$(getconf CLK_TCK)
  cpu_by_process >"$tmp/cpu.before"
  HCPSNAP_CPU_PROFILE=$prof /usr/bin/time -f '%e %U %S' -o "$tmp/time" \
    "$hcpsnap" -o json backup $(via "$way") >"$tmp/profile.ndjson" 2>"$tmp/hcpsnap.log" || rc=$?
  if ((rc == 3)) && [[ $way == exec ]]; then
    log "profile of exec at $size MiB skipped: refused (exit 3)"
    return 0
  fi
  ((rc == 0)) || { cat "$tmp/hcpsnap.log" >&2; die "profiled backup ($way, $size MiB) exited $rc"; }
  cpu_by_process >"$tmp/cpu.after"
  aws s3 rm --only-show-errors --recursive "s3://$HCPSNAP_BUCKET/backups/"
  read -r wall user sys <"$tmp/time"
  {
    echo "## Where the time goes at $size MiB, --via $way"
    echo
    echo "One more \`backup --via $way\`, not in the medians: $wall s on $(nproc) cores. CPU seconds of"
    echo "every process meanwhile (the bench's own shells left out; a program run in the pod is counted"
    echo "with whichever process reaped it):"
    echo
    echo "| process | CPU (s) |"
    echo "| --- | ---: |"
    echo "| hcpsnap | $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.1f", u + s}') |"
    join -a2 -e0 -o 0,1.2,2.2 "$tmp/cpu.before" "$tmp/cpu.after" |
      awk -v hz="$hz" '$1 != "bash" && $1 != "bench.sh" && $1 != "time" { d = ($3 - $2) / hz; if (d >= 0.2) printf "| %s | %.1f |\n", $1, d }' |
      sort -t '|' -k3 -nr
    echo
    echo "Steps (s): $(jq -r 'select(.message_type == "step_done") | "\(.step) \((.seconds // 0) * 100 | round / 100)"' "$tmp/profile.ndjson" | paste -sd, - | sed 's/,/, /g')."
    echo
    echo "hcpsnap's CPU by function (\`go tool pprof -top\`, first rows):"
    echo
    echo '```'
    go tool pprof -top -nodecount=12 "$hcpsnap" "$prof" 2>/dev/null | sed -n '/flat%/,$p'
    echo '```'
    echo
  } >"$out/profile-$size-$way.md"
}

# run_peer SIZE RUN: one pass of the manual runbook.
run_peer() {
  local t0 e2e marks
  t0=$(now)
  marks=$("$here/runbook.sh" "bench/peer/$1-$2.db" "$tmp/key-$1-$2.json" 2>"$tmp/runbook.log") ||
    { cat "$tmp/runbook.log" >&2; die "the runbook at $1 MiB, run $2 failed: the control plane may be left scaled down and paused"; }
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

# run_one WHAT SIZE RUN: one run of a way (stream, exec) or of the runbook (peer).
run_one() {
  case $1 in
    stream) run_hcpsnap stream "$2" "$3" $(via stream) ;;
    exec) run_hcpsnap exec "$2" "$3" $(via exec) ;;
    peer) if $room; then run_peer "$2" "$3"; fi ;;
  esac
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
contenders=($ways peer)
for size in $sizes; do
  log "size $size MiB: starting the environment (fill and start take a while at large sizes)"
  ETCD_DATA_MB=$size ETCD_VOLUME_MB=$volume_mb "$localenv" up >"$tmp/env.log" 2>&1 || { cat "$tmp/env.log" >&2; exit 1; }
  sed -n 's/.*\(filled etcd .*\)/\1/p' "$tmp/env.log" >&2
  # shellcheck disable=SC1090
  source "$envfile"
  cpns="$HCPSNAP_NAMESPACE-$HCPSNAP_CLUSTER"
  check_room "$size"
  if has_way stream; then
    [[ -x ${ETCDCTL:-} ]] || die "the environment names no etcdctl of the hosted etcd's version (ETCDCTL=${ETCDCTL:-}): run 'make deps'"
    fetch_etcd_tls
  fi
  for ((i = 1; i <= runs; i++)); do
    log "size $size MiB, run $i/$runs"
    if $room; then
      limit_snapshot "$size" "$i"
      limit_exec "$size" "$i"
    fi
    if has_way stream; then limit_portforward "$size" "$i"; fi
    # The order rotates by one place every run.
    n=${#contenders[@]}
    for ((k = 0; k < n; k++)); do
      run_one "${contenders[(k + i - 1) % n]}" "$size" "$i"
    done
    if has_way exec && $room; then
      run_hcpsnap exec-hold "$size" "$i" $(via exec) --hold-api-until-saved
    fi
  done
  if ((profile)); then
    for w in $ways; do
      log "size $size MiB: profiling one more run of --via $w"
      profile_run "$size" "$w"
    done
  fi
  if [[ -f $tmp/snapshot-$size.db ]]; then
    for ((i = 1; i <= runs; i++)); do limit_upload "$size" "$i" "$tmp/snapshot-$size.db"; done
    rm -f "$tmp/snapshot-$size.db"
  fi
  "$localenv" down >&2
done

machine=$(jq -n --arg nproc "$(nproc)" --arg mem "$(free -m | awk '/^Mem:/ {print $2}')" \
  --arg kernel "$(uname -sr)" --arg cpu "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)" \
  '{nproc: ($nproc | tonumber), memoryMiB: ($mem | tonumber), kernel: $kernel, cpu: $cpu}')
tools=$(jq -n --arg kubectl "$(command -v kubectl)" --arg etcdctl "${ETCDCTL:-}" --arg etcd "${HOSTED_ETCD_VERSION:-}" \
  --argjson via "$via_flag" --arg ways "$ways" \
  '{kubectl: $kubectl, etcdctl: $etcdctl, hostedEtcdVersion: $etcd, viaFlag: $via, ways: ($ways | split(" ") | map(select(. != "")))}')
jq -s --arg date "$started" --argjson machine "$machine" --argjson tools "$tools" \
  --arg hcpsnap_version "$("$hcpsnap" version 2>&1 | head -n 1)" \
  -f "$here/summarize.jq" "$runs_file" >"$out/results.json"
{
  jq -r -f "$here/markdown.jq" "$out/results.json"
  for size in $sizes; do
    for w in $ways; do
      if [[ -f $out/profile-$size-$w.md ]]; then echo; cat "$out/profile-$size-$w.md"; fi
    done
  done
} | tee "$out/results.md"
