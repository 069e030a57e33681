#!/usr/bin/env bash
# The demo behind `make demo`: shows the local environment, then runs
# hcpsnap's main job on it — a reviewed dry run, then a real backup — and
# checks the result with independent tools (kubectl, the aws CLI, etcdutl).
set -euo pipefail
hcpsnap=$1
envfile=$2
image_digest=$3
# shellcheck disable=SC1090
source "$envfile"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "hcpsnap"
"$hcpsnap" version

say "the hosted cluster ($HCPSNAP_NAMESPACE/$HCPSNAP_CLUSTER) on the local management cluster"
kubectl get hostedcluster -n "$HCPSNAP_NAMESPACE"
kubectl get deployments,pods -n "$HCPSNAP_NAMESPACE-$HCPSNAP_CLUSTER" -o wide

say "dry run: the runbook a reviewer reads (nothing is changed)"
"$hcpsnap" backup --dry-run

say "backup"
"$hcpsnap" backup

say "what is in the bucket (aws CLI)"
aws s3 ls --recursive "s3://$HCPSNAP_BUCKET/"

say "the control plane is back: replicas and pausedUntil"
kubectl get deployments -n "$HCPSNAP_NAMESPACE-$HCPSNAP_CLUSTER"
echo "spec.pausedUntil: '$(kubectl get hostedcluster -n "$HCPSNAP_NAMESPACE" "$HCPSNAP_CLUSTER" -o jsonpath='{.spec.pausedUntil}')' (empty: absent, as before)"

say "the snapshot, checked by etcdutl"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
key=$(aws s3 ls --recursive "s3://$HCPSNAP_BUCKET/backups/$HCPSNAP_CLUSTER/" | awk '/snapshot.db$/ {print $4}' | sort | tail -n 1)
aws s3 cp --quiet "s3://$HCPSNAP_BUCKET/$key" "$tmp/snapshot.db"
"$ETCDUTL" snapshot status "$tmp/snapshot.db" -w table

say "restore: a render of a new cluster, patched to restore this backup at creation"
manifest=$("$hcpsnap" -o json backups --cluster "$HCPSNAP_CLUSTER" | head -n 1 | sed 's/.*"manifest":"\([^"]*\)".*/\1/')
"$hcpsnap" restore --from "$manifest" -f e2e/testdata/render-none.yaml --verify --server-dry-run --out "$tmp/cluster.yaml"
echo "result: written with mode $(stat -c %a "$tmp/cluster.yaml"), restoreSnapshotURL set ($(grep -c "X-Amz-Signature" "$tmp/cluster.yaml") presigned URL, not shown); the file is removed at the end"
"$hcpsnap" backups --cluster "$HCPSNAP_CLUSTER"

say "retention: what 'hcpsnap prune --keep-last 1' would remove (--dry-run: nothing is removed)"
"$hcpsnap" prune --cluster "$HCPSNAP_CLUSTER" --keep-last 1 --dry-run

say "a nightly schedule of this backup from hcpsnap's own image (rendered, not applied: its objects and header)"
"$hcpsnap" schedule --schedule "0 2 * * *" --time-zone Europe/Paris --image "registry.example.com/hcpsnap@$(cat "$image_digest")" \
  --s3-credentials-secret hcpsnap-s3 --s3-endpoint "$AWS_ENDPOINT_URL_S3" --prune --keep-daily 7 | grep -E '^(#|kind:)'

say "the management cluster's own etcd: a MachineConfig for one master, checked by the API server (--dry-run=server: not stored)"
node=$(kubectl get nodes -l node-role.kubernetes.io/master -o jsonpath='{.items[0].metadata.name}')
"$hcpsnap" schedule management --host "$node" --on-calendar "*-*-* 02:00:00" --time-zone Europe/Paris --keep 7 --dry-run=server

say "done: the environment keeps running; 'make env-down' stops it ('make test' stops it too, then starts its own)"
