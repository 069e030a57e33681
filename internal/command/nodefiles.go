package command

import (
	"context"
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/pullnode"
)

// newNodeFilesCommand is the hidden command that hcpsnap's image runs in
// pull-node's pod: `wait` is the container's process; `list DIR` and
// `cat FILE OFFSET LENGTH` are run through pods/exec. The image has no
// shell, so hcpsnap itself serves the files.
func newNodeFilesCommand(stdout io.Writer) *cli.Command {
	var deadline time.Duration
	return &cli.Command{
		Name:   pullnode.NodeFilesCommand,
		Usage:  "serve a node's snapshot folder in pull-node's pod (internal)",
		Hidden: true,
		Commands: []*cli.Command{
			{
				Name:  "wait",
				Usage: "wait until SIGTERM or the deadline",
				Flags: []cli.Flag{&cli.DurationFlag{Name: "deadline", Value: time.Hour, Destination: &deadline}},
				Action: func(ctx context.Context, _ *cli.Command) error {
					select {
					case <-ctx.Done():
					case <-time.After(deadline):
					}
					return nil
				},
			},
			{
				Name:      "list",
				Usage:     "print the complete folders of DIR as JSON",
				ArgsUsage: "DIR",
				Action: func(_ context.Context, cmd *cli.Command) error {
					if cmd.Args().Len() != 1 {
						return exitcode.Usagef("node-files list takes one folder")
					}
					l, err := pullnode.List(cmd.Args().First())
					if err != nil {
						return err
					}
					return json.NewEncoder(stdout).Encode(l)
				},
			},
			{
				Name:      "cat",
				Usage:     "write LENGTH bytes of FILE from OFFSET",
				ArgsUsage: "FILE OFFSET LENGTH",
				Action: func(_ context.Context, cmd *cli.Command) error {
					if cmd.Args().Len() != 3 {
						return exitcode.Usagef("node-files cat takes a file, an offset and a length")
					}
					off, err1 := strconv.ParseInt(cmd.Args().Get(1), 10, 64)
					n, err2 := strconv.ParseInt(cmd.Args().Get(2), 10, 64)
					if err1 != nil || err2 != nil {
						return exitcode.Usagef("node-files cat: offset and length must be integers")
					}
					return pullnode.Cat(stdout, pullnode.MountPath, cmd.Args().First(), off, n)
				},
			},
		},
	}
}
