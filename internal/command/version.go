package command

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/urfave/cli/v3"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/version"
)

// VersionOptions are the options of `hcpsnap version`.
type VersionOptions struct {
	Output string
	Out    io.Writer
}

// Complete fills the options from the global ones.
func (o *VersionOptions) Complete(g *GlobalOptions) { o.Output = g.Output }

// Validate rejects an output format the command cannot write.
func (o *VersionOptions) Validate() error {
	if o.Output == OutputMarkdown {
		return exitcode.Usagef("--output markdown is only for a dry run; use text or json with 'version'")
	}
	return nil
}

// Run prints the build description.
func (o *VersionOptions) Run(context.Context) error {
	info := version.Get()
	if o.Output == OutputJSON {
		return json.NewEncoder(o.Out).Encode(struct {
			MessageType string `json:"message_type"`
			version.Info
		}{"version", info})
	}
	_, err := fmt.Fprintln(o.Out, info.String())
	return err
}

func newVersionCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:        "version",
		Usage:       "print hcpsnap's version, commit and Go version",
		Description: "Prints the release, the commit it was built from, and the Go toolchain and platform.\nWith -o json it prints one JSON object with message_type \"version\".",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := noArgs(cmd); err != nil {
				return err
			}
			o := &VersionOptions{Out: stdout}
			o.Complete(globalsFrom(ctx))
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(ctx)
		},
	}
}
