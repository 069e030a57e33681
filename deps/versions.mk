# The one place where hcpsnap pins the versions of everything it builds for its
# local environment and tests. `make deps-mod` regenerates the tools modules in
# deps/etcd, deps/etcd36 and deps/kube from these values (their go.sum files are
# committed), and `make check-versions` fails when a go.mod disagrees with this file.

# etcd server, etcdctl and etcdutl of the 3.6 line (what OpenShift 4.21 and 4.22
# run in hosted control planes), built from deps/etcd36 into .cache/bin/etcd-<version>/.
ETCD_36_VERSION := v3.6.5
# The same of the 3.5 line, built from deps/etcd into .cache/bin/etcd-<version>/.
ETCD_35_VERSION := v3.5.17
# The hosted etcd of the local environment: the 3.6 line by default; run
# `make env-up HOSTED_ETCD_VERSION=v3.5.17` (or `make test-etcd35`) for the other.
HOSTED_ETCD_VERSION_DEFAULT := $(ETCD_36_VERSION)
# The management cluster's own etcd: the 3.5 line, the one kube-apiserver
# v1.32 is released and tested with.
MGMT_ETCD_VERSION := $(ETCD_35_VERSION)
# kube-apiserver, kube-controller-manager and kubectl (built from k8s.io/kubernetes);
# the staging modules are replaced by the same-numbered v0.x releases.
KUBE_VERSION := v1.32.3
# The S3-compatible server of the local environment.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
# The HostedCluster/HostedControlPlane API and CRDs (also required by go.mod).
HYPERSHIFT_API_VERSION := v0.0.0-20251120083117-dea6d2f24af6
