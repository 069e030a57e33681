#!/bin/bash
# A stand-in for OpenShift's /usr/local/bin/cluster-backup.sh in hcpsnap's
# tests (management/script_e2e_test.go). Like the real one, given a folder it
# writes there, named after the local time:
#   static_kuberesources_<%F_%H%M%S>.tar.gz  a tar.gz of the static pod
#                                            resources (here STANDIN_RESOURCES)
#   snapshot_<same>.db                       `etcdctl snapshot save` of a real
#                                            etcd (STANDIN_ETCDCTL against
#                                            STANDIN_ENDPOINTS)
# both mode 0600, and exits non-zero on failure.
#
# STANDIN_FAIL makes it go wrong on purpose:
#   after-resources      exit 1 after writing the tar.gz (a failed run that
#                        leaves part of its output)
#   no-snapshot-exit-0   write the tar.gz only and exit 0 (a broken script)
#   extra-file-exit-0    write both and a stray file, exit 0
#   empty-snapshot-exit-0  an empty snapshot file, exit 0
# STANDIN_SLEEP=N sleeps N seconds after the tar.gz (for signals and locks).
# STANDIN_CALLS, if set, is a file that gets one line (the folder) per call.
set -o errexit -o nounset -o pipefail

if [[ $# -ne 1 || -z $1 || -f $1 ]]; then
	echo 'Path to backup dir required: ./cluster-backup.sh <path-to-backup-dir>'
	exit 1
fi
dir=$1
if [[ -n ${STANDIN_CALLS:-} ]]; then
	echo "$dir" >>"$STANDIN_CALLS"
fi
mkdir -p "$dir"

when=$(date "+%F_%H%M%S")
resources=$dir/static_kuberesources_$when.tar.gz
snapshot=$dir/snapshot_$when.db

tar -czf "$resources" -C "$STANDIN_RESOURCES" .
chmod 600 "$resources"
echo "found latest static pod resources in $STANDIN_RESOURCES"
if [[ -n ${STANDIN_SLEEP:-} ]]; then
	sleep "$STANDIN_SLEEP"
fi

case ${STANDIN_FAIL:-} in
after-resources)
	echo "stand-in: failing after the static pod resources, as asked"
	exit 1
	;;
no-snapshot-exit-0)
	echo "stand-in: no snapshot, and exit 0, as asked"
	exit 0
	;;
empty-snapshot-exit-0)
	: >"$snapshot"
	echo "stand-in: an empty snapshot, and exit 0, as asked"
	exit 0
	;;
esac

"$STANDIN_ETCDCTL" --endpoints="$STANDIN_ENDPOINTS" snapshot save "$snapshot"
chmod 600 "$snapshot"

if [[ ${STANDIN_FAIL:-} == extra-file-exit-0 ]]; then
	echo stray >"$dir/stray.txt"
fi
echo "snapshot db and kube resources are successfully saved to $dir"
