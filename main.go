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
	"syscall"

	"github.com/hcpsnap/hcpsnap/internal/command"
	"github.com/hcpsnap/hcpsnap/internal/exitcode"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := command.New(os.Stdin, os.Stdout, os.Stderr).Run(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "hcpsnap: %v\n", err)
	}
	os.Exit(int(exitcode.Of(err)))
}
