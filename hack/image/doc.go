// Command image builds hcpsnap's container image without a container engine and without a base image: one layer
// holding the static hcpsnap binary at /hcpsnap, the CA certificates of the build machine, /etc/passwd and
// /etc/group naming the non-root user 65532 (group 0, so that an arbitrary UID with GID 0, as OpenShift's
// restricted SCC runs it, owns the same files) and an empty /tmp. There is no shell.
//
// The build is reproducible: every entry of the layer has the modification time SOURCE_DATE_EPOCH (the commit's
// time), owner 0:0 and a fixed mode; entries are sorted; gzip has no timestamp; the config's created time is the
// same epoch. Two builds of one commit (same binary, same certificates) have the same digest.
//
// It writes an OCI image layout (for skopeo, crane, podman) and a tarball that `docker load` and `podman load`
// accept, checks that both read back as the same image, and prints the manifest digest as the last line of stdout.
// `make image` runs it.
//
// Layer: build tooling, outside hcpsnap's layers (hack/ is not ranked); it imports nothing of hcpsnap.
package main
