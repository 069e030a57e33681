// Package fsutil owns hcpsnap's one way of writing a file that must never be
// torn or readable by others: run files, key bundles and restore output.
//
// Layer: helper below the adapters. It imports nothing of hcpsnap.
package fsutil
