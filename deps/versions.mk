# The one place where hcpsnap pins the versions of everything it builds for its
# local environment and tests. `make deps-mod` regenerates the tools modules in
# deps/etcd and deps/kube from these values (their go.sum files are committed),
# and `make check-versions` fails when a go.mod disagrees with this file.

# etcd server, etcdctl and etcdutl (built from the go.etcd.io/etcd v3.5 modules).
ETCD_VERSION := v3.5.17
# kube-apiserver, kube-controller-manager and kubectl (built from k8s.io/kubernetes);
# the staging modules are replaced by the same-numbered v0.x releases.
KUBE_VERSION := v1.32.3
# The S3-compatible server of the local environment.
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
# The HostedCluster/HostedControlPlane API and CRDs (also required by go.mod).
HYPERSHIFT_API_VERSION := v0.0.0-20251120083117-dea6d2f24af6
