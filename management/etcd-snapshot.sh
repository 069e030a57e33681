#!/bin/bash
# Placeholder until the snapshot script lands (issue 13): refuses to run.
echo "hcpsnap-etcd-snapshot: not implemented yet" >&2
exit 1
