// Package version owns what `hcpsnap version` reports: the release, the commit
// it was built from and the Go toolchain. The Makefile sets Version and Commit
// with -ldflags; a plain `go build` falls back to the module's build info.
//
// Layer: plain data, shared by every layer. It imports nothing of hcpsnap.
package version
