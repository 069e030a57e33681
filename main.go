// Command hcpsnap backs up the etcd of a HyperShift HostedCluster to S3 and
// prepares a new HostedCluster that restores from such a backup.
//
// main is the only place that exits: every failure travels up as an error
// whose class (internal/exitcode) decides the documented exit code.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/hcpsnap/hcpsnap/internal/command"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

func main() {
	stopProfile := startCPUProfile(os.Getenv("HCPSNAP_CPU_PROFILE"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := command.New(os.Stdin, os.Stdout, os.Stderr).Run(ctx, os.Args)
	stop()
	stopProfile()
	if err != nil {
		fmt.Fprintf(os.Stderr, "hcpsnap: %v\n", err)
	}
	os.Exit(int(exitcode.Of(err)))
}

// startCPUProfile writes a pprof CPU profile of the whole run to path (for
// `make bench`); an empty path profiles nothing.
func startCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "hcpsnap: HCPSNAP_CPU_PROFILE: %v\n", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
