#!/usr/bin/env bash
# The peer of the benchmark: HyperShift's manual etcd backup runbook, performed
# literally with kubectl, etcdctl (inside the etcd pod) and curl, in the
# runbook's order: pause, scale down, snapshot, upload, save the key, scale up,
# unpause, remove the pod file. Every change is waited for the way a careful
# operator does before the next command.
#
# Usage: runbook.sh KEY KEYFILE
#   KEY      object key of the snapshot in $HCPSNAP_BUCKET
#   KEYFILE  local file (written 0600) that receives the encryption Secret
# Needs the environment of .localenv/env (KUBECONFIG, AWS_*, HCPSNAP_*).
#
# Prints "BENCH name=value" lines for the driver on stdout (times are Unix
# seconds): down_start, down_end, snapshot_seconds, upload_seconds,
# snapshot_bytes. Credentials travel to the pod on the exec's stdin, never in
# an argument, and are never printed.
set -euo pipefail

key=$1
keyfile=$2
ns=${HCPSNAP_NAMESPACE:-clusters}
name=${HCPSNAP_CLUSTER:-example}
cpns="$ns-$name"
bucket=$HCPSNAP_BUCKET
deployments=(kube-apiserver openshift-apiserver openshift-oauth-apiserver)
snapshot=/var/lib/data/snapshot.db
etcdctl=(/usr/bin/etcdctl --cacert /etc/etcd/tls/etcd-ca/ca.crt
  --cert /etc/etcd/tls/client/etcd-client.crt --key /etc/etcd/tls/client/etcd-client.key
  --endpoints localhost:2379)

now() { date +%s.%N; }
mark() { echo "BENCH $1=$2"; }
log() { echo "runbook: $*" >&2; }
in_etcd() { kubectl exec -n "$cpns" etcd-0 -c etcd -- "$@"; }

# wait_for DESCRIPTION COMMAND...: polls COMMAND every 200 ms, for 5 minutes at most.
wait_for() {
  local what=$1 deadline=$((SECONDS + 300))
  shift
  until "$@"; do
    if ((SECONDS > deadline)); then log "timed out waiting for $what"; return 1; fi
    sleep 0.2
  done
}
hcp_paused_until() { kubectl get hostedcontrolplane -n "$cpns" "$name" -o jsonpath='{.spec.pausedUntil}'; }
hcp_shows() { [[ "$(hcp_paused_until)" == "$1" ]]; }

# 1. Pause reconciliation until a deadline, and wait until the control plane shows it.
until=$(date -u -d '+30 minutes' +%Y-%m-%dT%H:%M:%SZ)
log "pause reconciliation until $until"
kubectl patch hostedcluster -n "$ns" "$name" --type=merge -p "{\"spec\":{\"pausedUntil\":\"$until\"}}" >/dev/null
wait_for "the HostedControlPlane to show pausedUntil" hcp_shows "$until"

# 2. Scale the API servers to 0 and wait until their pods are gone: the API is down from here.
log "scale ${deployments[*]} to 0"
mark down_start "$(now)"
kubectl scale deployment -n "$cpns" "${deployments[@]}" --replicas=0 >/dev/null
kubectl wait pod -n "$cpns" --for=delete -l 'app in (kube-apiserver,openshift-apiserver,openshift-oauth-apiserver)' \
  --timeout=5m >/dev/null

# 3. Snapshot etcd-0 with the runbook's TLS flags, then check it.
log "etcdctl snapshot save $snapshot"
t0=$(now)
in_etcd env ETCDCTL_API=3 "${etcdctl[@]}" snapshot save "$snapshot" >&2
# etcdutl reads the file: etcd 3.6's etcdctl no longer has `snapshot status`.
in_etcd /usr/bin/etcdutl snapshot status "$snapshot" -w table >&2
mark snapshot_seconds "$(echo "$(now) - $t0" | bc)"
mark snapshot_bytes "$(in_etcd stat -c %s "$snapshot")"

# 4. Upload from inside the pod with curl's SigV4; the credentials come on stdin.
log "upload to s3://$bucket/$key"
upload=$(printf '%s\n%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" |
  kubectl exec -i -n "$cpns" etcd-0 -c etcd -- sh -c '
    read -r AWS_ACCESS_KEY_ID; read -r AWS_SECRET_ACCESS_KEY
    curl -sS --fail --aws-sigv4 "aws:amz:$0:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
      -T '"$snapshot"' -w "%{time_total}" -o /dev/null "$1"' \
    "$AWS_REGION" "$AWS_ENDPOINT_URL_S3/$bucket/$key")
mark upload_seconds "$upload"

# 5. Save the encryption key Secret to a private file.
secret=$(kubectl get hostedcluster -n "$ns" "$name" -o jsonpath='{.spec.secretEncryption.aescbc.activeKey.name}')
log "save Secret $ns/$secret to $keyfile"
(umask 077 && kubectl get secret -n "$ns" "$secret" -o json >"$keyfile")

# 6. Scale back and wait until all three Deployments are available: the API is back.
log "scale ${deployments[*]} back to 3"
kubectl scale deployment -n "$cpns" "${deployments[@]}" --replicas=3 >/dev/null
for d in "${deployments[@]}"; do
  kubectl rollout status deployment -n "$cpns" "$d" --timeout=5m >/dev/null
done
kubectl wait deployment -n "$cpns" "${deployments[@]}" --for=condition=Available --timeout=5m >/dev/null
mark down_end "$(now)"

# 7. Unpause (pausedUntil was absent before) and wait until the control plane shows it.
log "resume reconciliation"
kubectl patch hostedcluster -n "$ns" "$name" --type=json -p '[{"op":"remove","path":"/spec/pausedUntil"}]' >/dev/null
wait_for "the HostedControlPlane to drop pausedUntil" hcp_shows ""

# 8. Remove the snapshot from the pod.
log "remove $snapshot"
in_etcd rm -f "$snapshot"
