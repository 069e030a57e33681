// Package exitcode owns hcpsnap's documented exit codes and the error type that
// carries one from wherever a failure is classified up to main, the only place
// that exits.
//
// Layer: plain data, shared by every layer. It imports nothing of hcpsnap.
package exitcode
