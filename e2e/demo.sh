#!/usr/bin/env bash
# The demo behind `make demo`: shows the local environment, then runs
# hcpsnap's main job on it — a reviewed dry run, then a real backup — and
# checks the result with independent tools (kubectl, the aws CLI, etcdutl).
set -euo pipefail
hcpsnap=$1
envfile=$2
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

say "done: the environment keeps running; 'make env-down' stops it"
