#!/bin/bash
# hcpsnap-etcd-snapshot: one scheduled etcd snapshot of this OpenShift
# cluster, taken on one master with OpenShift's own cluster-backup.sh.
#
# Installed by the MachineConfig that `hcpsnap schedule management` renders;
# a systemd oneshot service runs it as root and sends its output to the
# journal (journalctl -u hcpsnap-etcd-snapshot). The MachineConfig goes to
# every master: on all but HOST the script exits 0 at once.
#
# Settings, from the service's Environment= lines:
#   HOST            node name of the master that takes the snapshots
#   TGT_DIR         folder that receives one folder per run, strictly under
#                   /home/core, /mnt or /var (or /tmp with ALLOW_TMPFS=true)
#   KEEP            how many complete backups to keep (at least 1)
#   ALLOW_TMPFS     "true" lets TGT_DIR be under /tmp (lost at reboot)
#   CLUSTER_BACKUP  OpenShift's backup script (/usr/local/bin/cluster-backup.sh)
#
# Each run, holding a lock on TGT_DIR/.hcpsnap-etcd-snapshot.lock (a second
# run meanwhile exits 1 at once):
#   1. removes what earlier runs left behind (<time>.partial, <time>.removing);
#   2. refuses to start when TGT_DIR has less free space than the etcd
#      database (/var/lib/etcd/member/snap/db) and a tenth;
#   3. creates TGT_DIR/<UTC start, YYYYMMDDTHHMMSSZ>.partial (mode 0700) and
#      runs cluster-backup.sh into it;
#   4. on success, checks that the folder holds exactly one non-empty
#      snapshot_*.db and one static_kuberesources_*.tar.gz, and renames it to
#      TGT_DIR/<time> (a folder with that name is complete);
#   5. keeps the newest KEEP complete folders and removes older ones. It never
#      removes the newest complete folder nor the one it just made, and it
#      touches nothing in TGT_DIR but folders with the names above.
# A failed run removes its own folder, leaves every complete one alone, and
# exits non-zero, so `systemctl status` and the journal show the failure.
#
# `hcpsnap-etcd-snapshot.sh --validate` checks the settings on any node and
# exits 0 (settings usable) or 2 (one line naming the bad setting).
#
# Exit codes: 0 done, or not HOST; 1 the run failed; 2 a setting is invalid.
#
# The checks below mirror hcpsnap's own (management/target.go): the lines
# marked "contract" are compared with it by management's tests.

set -o errexit -o nounset -o pipefail -o errtrace
shopt -s nullglob dotglob
umask 077 # the snapshot holds every Secret of the cluster
export LC_ALL=C

readonly ALLOWED_ROOTS=(/home/core /mnt /var) # contract: allowedRoots
readonly TMP_ROOT=/tmp # contract: tmpRoot
readonly FORBIDDEN=(/var/lib/etcd /var/lib/kubelet /var/lib/containers /var/lib/cni /var/usrlocal /var/run /var/lock /var/lib/rpm-ostree /var/lib/ostree) # contract: forbidden
readonly COMPLETE_RE='^[0-9]{8}T[0-9]{6}Z$' # contract: completeFolder
readonly PARTIAL_SUFFIX=.partial # contract: PartialSuffix
readonly REMOVING_SUFFIX=.removing # contract: RemovingSuffix
readonly LOCK_NAME=.hcpsnap-etcd-snapshot.lock # contract: LockName
readonly DEFAULT_CLUSTER_BACKUP=/usr/local/bin/cluster-backup.sh # contract: DefaultClusterBackup
readonly ETCD_DB=/var/lib/etcd/member/snap/db
readonly EXIT_FAILED=1 # contract: ExitFailed
readonly EXIT_BAD_SETTING=2 # contract: ExitBadSetting
readonly MAX_KEEP=100 # contract: MaxKeep
readonly TAG=hcpsnap-etcd-snapshot:
roots=$(printf '%s, ' "${ALLOWED_ROOTS[@]}")
readonly ROOTS=${roots%, } # "/home/core, /mnt, /var", for messages

# Under systemd, prefix each line with its syslog priority (sd-daemon(3)), so
# that `journalctl -p err` shows failures; only when stderr is the journal
# stream that systemd named in JOURNAL_STREAM, never on a terminal.
p_info='' p_warn='' p_err=''
if [[ -n ${JOURNAL_STREAM:-} && "$(stat -L -c '%d:%i' "/proc/$$/fd/2" 2>/dev/null || true)" == "$JOURNAL_STREAM" ]]; then
	p_info='<6>' p_warn='<4>' p_err='<3>'
fi
log() { printf '%s%s %s\n' "$p_info" "$TAG" "$*"; }
warn() { printf '%s%s warning: %s\n' "$p_warn" "$TAG" "$*" >&2; }
err() { printf '%s%s error: %s\n' "$p_err" "$TAG" "$*" >&2; }
# bad_setting NAME VALUE REASON: the one line for an invalid setting, exit 2.
bad_setting() {
	err "$1=\"$2\" $3; not running (hcpsnap schedule management renders the settings into the service's Environment= lines)"
	exit "$EXIT_BAD_SETTING"
}

# The folder of this run while it is not complete; the EXIT trap removes it
# when the script ends early (SIGTERM from systemd, an unexpected error).
partial=''
on_exit() {
	local rc=$?
	if [[ -n $partial && -d $partial ]]; then
		rm -rf --one-file-system -- "$partial" || true
		err "run ended early (exit $rc); removed $partial"
	fi
}
trap on_exit EXIT
# One line for a command that failed unexpectedly, from the script's own
# process only (a failure in a $(...) shows again as the failure of the
# command around it).
trap_rc=0
trap 'trap_rc=$?; if [[ $BASHPID == "$$" ]]; then err "unexpected failure (exit $trap_rc) at line $LINENO: $BASH_COMMAND"; fi' ERR
trap 'exit 143' TERM
trap 'exit 130' INT

# target_problem DIR ALLOW_TMPFS: prints why DIR may not hold snapshots
# (empty output: it may). The rules of management.CheckTargetDir.
target_problem() {
	local dir=$1 allow=$2 f r
	if [[ -z $dir ]]; then
		echo "is empty: give a folder under $ROOTS"
		return
	fi
	if [[ $dir != /* ]]; then
		echo "is not an absolute path: give a folder under $ROOTS"
		return
	fi
	if [[ $dir != / && ($dir == */ || $dir == *//* || $dir == */./* || $dir == */../* || $dir == */. || $dir == */..) ]]; then
		echo "is not a clean path (no trailing /, no //, . or ..)"
		return
	fi
	if [[ ! $dir =~ ^[A-Za-z0-9/._-]+$ ]]; then
		echo "holds characters other than letters, digits and . _ - /"
		return
	fi
	for f in "${FORBIDDEN[@]}"; do
		if [[ $dir == "$f" || $dir == "$f"/* || $f == "$dir"/* ]]; then
			echo "is or holds $f, which the node itself uses: pick another folder"
			return
		fi
	done
	if [[ $dir == "$TMP_ROOT"/* ]]; then
		if [[ $allow != true ]]; then
			echo "is on $TMP_ROOT, a tmpfs that a reboot empties: pick a folder under $ROOTS, or set ALLOW_TMPFS=true"
		fi
		return
	fi
	for r in "${ALLOWED_ROOTS[@]}"; do
		if [[ $dir == "$r"/* ]]; then
			return
		fi
	done
	echo "is outside the allowed places: pick a folder under $ROOTS (or $TMP_ROOT with ALLOW_TMPFS=true)"
}

# node_matches HOST NODE: the node names are equal (ignoring case), or one is
# a short name and the other a full name that starts with it.
node_matches() {
	local want=${1,,} have=${2,,}
	[[ $want == "$have" || $want == "${have%%.*}" || $have == "${want%%.*}" ]]
}

# check_host: HOST is a node name (checked before comparing it, so that a
# mistyped HOST fails on every master instead of skipping on all of them).
check_host() {
	if [[ -z ${HOST:-} ]]; then
		bad_setting HOST "" "is empty: set the node name of the master that takes the snapshots (oc get nodes)"
	fi
	if [[ ! $HOST =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
		bad_setting HOST "$HOST" "is not a node name: set the node name of the master that takes the snapshots (oc get nodes)"
	fi
}

# check_settings: every setting, one line and exit 2 on the first bad one.
# Sets tgt, keep, allow_tmpfs, cluster_backup.
check_settings() {
	local problem resolved
	check_host
	allow_tmpfs=${ALLOW_TMPFS:-false}
	if [[ $allow_tmpfs != true && $allow_tmpfs != false ]]; then
		bad_setting ALLOW_TMPFS "$allow_tmpfs" "is neither true nor false"
	fi
	tgt=${TGT_DIR:-}
	problem=$(target_problem "$tgt" "$allow_tmpfs")
	if [[ -n $problem ]]; then
		bad_setting TGT_DIR "$tgt" "$problem"
	fi
	# The same rules for the folder that TGT_DIR really is: a symbolic link
	# must not lead into etcd's data or out of the allowed places. (On RHCOS
	# /home and /mnt are links into /var, which is allowed.)
	if ! resolved=$(realpath -m -- "$tgt"); then
		bad_setting TGT_DIR "$tgt" "cannot be resolved (realpath failed)"
	fi
	if [[ $resolved != "$tgt" ]]; then
		problem=$(target_problem "$resolved" "$allow_tmpfs")
		if [[ -n $problem ]]; then
			bad_setting TGT_DIR "$tgt" "leads to $resolved, which $problem"
		fi
	fi
	keep=${KEEP:-}
	if [[ ! $keep =~ ^[1-9][0-9]{0,2}$ || $keep -gt $MAX_KEEP ]]; then
		bad_setting KEEP "$keep" "is not a whole number from 1 to $MAX_KEEP"
	fi
	cluster_backup=${CLUSTER_BACKUP:-$DEFAULT_CLUSTER_BACKUP}
	if [[ $cluster_backup != /* || ! -f $cluster_backup || ! -x $cluster_backup ]]; then
		bad_setting CLUSTER_BACKUP "$cluster_backup" "is not an executable file (is this an OpenShift master?)"
	fi
}

# complete_folders: the names of the complete folders in tgt, oldest first
# (the names are UTC times of one fixed width, so C order is time order).
complete_folders() {
	local e
	for e in "$tgt"/*; do
		if [[ ${e##*/} =~ $COMPLETE_RE && -d $e && ! -L $e ]]; then
			printf '%s\n' "${e##*/}"
		fi
	done
}

# newest_complete: the newest complete folder's name, or "none".
newest_complete() {
	local names
	names=$(complete_folders)
	if [[ -z $names ]]; then
		echo none
	else
		printf '%s\n' "${names##*$'\n'}"
	fi
}

# remove_folder NAME: renames tgt/NAME out of the complete names first, so
# that a removal cut short never leaves a half-deleted folder that looks
# complete (the next run removes what is left).
remove_folder() {
	local name=$1 gone=$tgt/$1$REMOVING_SUFFIX
	mv -T -- "$tgt/$name" "$gone" && rm -rf --one-file-system -- "$gone"
}

# check_output DIR: prints what is wrong with DIR as cluster-backup.sh's
# output (empty output: exactly one non-empty snapshot_*.db and one
# static_kuberesources_*.tar.gz, both regular files, nothing else).
check_output() {
	local e name dbs=0 tars=0 other=()
	for e in "$1"/*; do
		name=${e##*/}
		if [[ $name == snapshot_*.db && -f $e && ! -L $e && -s $e ]]; then
			dbs=$((dbs + 1))
		elif [[ $name == static_kuberesources_*.tar.gz && -f $e && ! -L $e && -s $e ]]; then
			tars=$((tars + 1))
		else
			other+=("$name")
		fi
	done
	if [[ $dbs != 1 || $tars != 1 || ${#other[@]} != 0 ]]; then
		echo "holds $dbs non-empty snapshot_*.db, $tars non-empty static_kuberesources_*.tar.gz and ${#other[@]} other entries (${other[*]:-none}); want exactly one of each"
	fi
}

# check_space: refuses to start when TGT_DIR has less free space than the
# etcd database (plus a tenth): the snapshot is about as large.
check_space() {
	local db_bytes avail need
	if [[ ! -f $ETCD_DB ]]; then
		warn "no etcd database at $ETCD_DB: free space in $tgt not checked"
		return
	fi
	db_bytes=$(stat -c %s -- "$ETCD_DB")
	avail=$(df -B1 --output=avail -- "$tgt" | tail -n 1)
	avail=${avail//[[:space:]]/}
	need=$((db_bytes + db_bytes / 10))
	if [[ ! $avail =~ ^[0-9]+$ ]]; then
		warn "cannot read the free space of $tgt: not checked"
	elif ((avail < need)); then
		err "only $((avail >> 20)) MiB free in $tgt, the etcd database is $((db_bytes >> 20)) MiB (needs $((need >> 20)) MiB): not starting; the complete backups are untouched (newest: $(newest_complete))"
		exit "$EXIT_FAILED"
	else
		log "free space in $tgt: $((avail >> 20)) MiB, etcd database $((db_bytes >> 20)) MiB"
	fi
}

# new_stamp: a start time in UTC that names no folder in tgt yet (two runs in
# one second: the second waits for the next second).
new_stamp() {
	local stamp i
	for ((i = 0; i < 10; i++)); do
		stamp=$(date -u +%Y%m%dT%H%M%SZ)
		if [[ ! -e $tgt/$stamp && ! -e $tgt/$stamp$PARTIAL_SUFFIX && ! -e $tgt/$stamp$REMOVING_SUFFIX ]]; then
			printf '%s\n' "$stamp"
			return
		fi
		sleep 1
	done
	err "every name for the start time is taken in $tgt (is the clock stuck?)"
	return 1
}

main() {
	local node lock stamp name rc start elapsed problem keep_from i total removed=0 failed=0 newest
	local -a complete
	if [[ $# -gt 1 || ($# -eq 1 && $1 != --validate) ]]; then
		err "usage: $0 [--validate] (settings come from the environment: HOST, TGT_DIR, KEEP, ALLOW_TMPFS, CLUSTER_BACKUP)"
		exit "$EXIT_BAD_SETTING"
	fi
	if [[ $# -eq 1 ]]; then
		check_settings
		if [[ $allow_tmpfs == true && $tgt == "$TMP_ROOT"/* ]]; then
			warn "TGT_DIR=$tgt is on $TMP_ROOT, a tmpfs: its snapshots are lost when the node reboots"
		fi
		log "settings ok: HOST=$HOST TGT_DIR=$tgt KEEP=$keep ALLOW_TMPFS=$allow_tmpfs CLUSTER_BACKUP=$cluster_backup"
		return
	fi

	check_host
	node=$(hostname 2>/dev/null || uname -n)
	if ! node_matches "$HOST" "$node"; then
		log "this node is $node, not HOST=$HOST: nothing to do"
		exit 0
	fi
	check_settings
	log "start on $node: TGT_DIR=$tgt KEEP=$keep cluster-backup $cluster_backup"
	if [[ $allow_tmpfs == true && $tgt == "$TMP_ROOT"/* ]]; then
		warn "TGT_DIR=$tgt is on $TMP_ROOT, a tmpfs: its snapshots are lost when the node reboots; pull them off the node promptly"
	fi

	mkdir -p -- "$tgt"
	if [[ -L $tgt || ! -d $tgt ]]; then
		err "TGT_DIR=$tgt is not a folder: not running"
		exit "$EXIT_FAILED"
	fi
	lock=$tgt/$LOCK_NAME
	# fd 9 holds the lock until the script ends; cluster-backup.sh inherits
	# it, so a run whose script was killed keeps its folder locked until its
	# cluster-backup.sh ends too.
	exec 9>>"$lock"
	if ! flock -n 9; then
		err "another run holds the lock $lock: not starting"
		exit "$EXIT_FAILED"
	fi

	# Holding the lock, no other run is in progress: whatever runs left
	# unfinished can go.
	for name in "$tgt"/*; do
		name=${name##*/}
		if [[ ($name == *"$PARTIAL_SUFFIX" && ${name%"$PARTIAL_SUFFIX"} =~ $COMPLETE_RE) ||
			($name == *"$REMOVING_SUFFIX" && ${name%"$REMOVING_SUFFIX"} =~ $COMPLETE_RE) ]] &&
			[[ -d $tgt/$name && ! -L $tgt/$name ]]; then
			rm -rf --one-file-system -- "${tgt:?}/$name"
			log "removed $name, left by an earlier run that failed or was cut short"
		fi
	done

	check_space

	if ! stamp=$(new_stamp); then
		exit "$EXIT_FAILED"
	fi
	mkdir -- "$tgt/$stamp$PARTIAL_SUFFIX"
	partial=$tgt/$stamp$PARTIAL_SUFFIX
	log "created $partial"

	start=$SECONDS
	rc=0
	"$cluster_backup" "$partial" || rc=$?
	elapsed=$((SECONDS - start))
	if [[ $rc != 0 ]]; then
		rm -rf --one-file-system -- "$partial"
		partial=''
		err "cluster-backup.sh failed with exit code $rc after ${elapsed}s; removed $tgt/$stamp$PARTIAL_SUFFIX; the complete backups are untouched (newest: $(newest_complete))"
		exit "$EXIT_FAILED"
	fi
	problem=$(check_output "$partial")
	if [[ -n $problem ]]; then
		rm -rf --one-file-system -- "$partial"
		partial=''
		err "cluster-backup.sh exited 0 after ${elapsed}s, but its folder $problem; removed $tgt/$stamp$PARTIAL_SUFFIX; the complete backups are untouched (newest: $(newest_complete))"
		exit "$EXIT_FAILED"
	fi
	log "cluster-backup.sh succeeded in ${elapsed}s"

	if [[ -e $tgt/$stamp ]]; then
		err "$tgt/$stamp appeared while cluster-backup.sh ran (not by this script: it holds the lock): not renaming"
		exit "$EXIT_FAILED"
	fi
	mv -T -- "$partial" "$tgt/$stamp"
	partial=''
	log "renamed $stamp$PARTIAL_SUFFIX to $stamp: backup complete"

	# Retention: the newest KEEP complete folders stay; neither the newest
	# name nor this run's folder goes, whatever the clock did.
	mapfile -t complete < <(complete_folders)
	total=${#complete[@]}
	newest=${complete[total - 1]}
	keep_from=$((total - keep))
	for ((i = 0; i < keep_from; i++)); do
		name=${complete[i]}
		if [[ $name == "$newest" || $name == "$stamp" ]]; then
			continue
		fi
		if remove_folder "$name"; then
			removed=$((removed + 1))
			log "removed $name (older than the newest KEEP=$keep)"
		else
			failed=$((failed + 1))
			err "could not remove $tgt/$name"
		fi
	done
	if [[ $newest != "$stamp" ]]; then
		warn "$newest is newer than this run's $stamp: is the clock right? Both are kept"
	fi
	mapfile -t complete < <(complete_folders)
	log "retention KEEP=$keep: kept ${#complete[@]} complete backups in $tgt (newest ${complete[-1]}, oldest ${complete[0]}), removed $removed"
	if [[ $failed != 0 ]]; then
		exit "$EXIT_FAILED"
	fi
}

main "$@"
