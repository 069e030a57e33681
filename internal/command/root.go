package command

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/charmbracelet/log"
	"github.com/urfave/cli/v3"

	"github.com/hcpsnap/hcpsnap/internal/exitcode"
	"github.com/hcpsnap/hcpsnap/internal/logging"
)

// GlobalOptions are the options every command shares. They are read once, in
// the root command's Before hook, and handed to each command's options.
type GlobalOptions struct {
	Kubeconfig string
	Context    string
	LogLevel   string
	LogFormat  string
	Output     string
}

// Validate checks the global options without any I/O.
func (o *GlobalOptions) Validate() error {
	if err := logging.Validate(o.LogLevel, o.LogFormat); err != nil {
		return exitcode.New(exitcode.Usage, err)
	}
	switch o.Output {
	case OutputText, OutputJSON, OutputMarkdown:
	default:
		return exitcode.Usagef("--output %q is not a format: use %s, %s or %s", o.Output, OutputText, OutputJSON, OutputMarkdown)
	}
	return nil
}

type globalsKey struct{}

// globalsFrom returns the global options stored by the root's Before hook.
func globalsFrom(ctx context.Context) *GlobalOptions {
	g, _ := ctx.Value(globalsKey{}).(*GlobalOptions)
	if g == nil {
		return &GlobalOptions{LogLevel: "info", LogFormat: logging.FormatText, Output: OutputText}
	}
	return g
}

const rootDescription = `hcpsnap backs up the etcd of a HyperShift HostedCluster to S3 and prepares a
new HostedCluster that restores from such a backup. It performs HyperShift's
etcd backup runbook as one safe, resumable, reviewable command: every change
to the cluster is recorded before it is made and undone on failure or Ctrl-C.

Cluster access follows kubectl's rules: --kubeconfig, else $KUBECONFIG, else
~/.kube/config, else the in-cluster service account. S3 access follows the AWS
SDK's rules: profiles, AWS_* variables, web identity, AWS_ENDPOINT_URL_S3.

Logs go to stderr; results go to stdout (-o json: one JSON object per line).
Secrets (AES keys, AWS keys, presigned URLs) are never printed.

EXIT CODES:
` // the table is appended by exitCodeHelp

func exitCodeHelp() string {
	var b strings.Builder
	for _, row := range exitcode.Table {
		fmt.Fprintf(&b, "   %3d  %s\n", row.Code, row.Meaning)
	}
	return b.String()
}

// New returns hcpsnap's root command writing results to stdout and logs and
// help to stderr... except help, which goes to stdout as a manual should.
func New(stdin io.Reader, stdout, stderr io.Writer) *cli.Command {
	g := &GlobalOptions{}
	root := &cli.Command{
		Name:                  "hcpsnap",
		Usage:                 "back up and restore the etcd of HyperShift hosted control planes",
		Description:           rootDescription + exitCodeHelp(),
		Writer:                stdout,
		ErrWriter:             stderr,
		HideVersion:           true,
		EnableShellCompletion: true,
		Suggest:               true,
		ExitErrHandler:        func(context.Context, *cli.Command, error) {}, // only main exits
		OnUsageError:          usageError,
		Action: func(_ context.Context, cmd *cli.Command) error {
			if cmd.Args().Present() {
				return exitcode.Usagef("unknown command %q; run 'hcpsnap --help' for the list of commands", cmd.Args().First())
			}
			return cli.ShowRootCommandHelp(cmd)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: FlagKubeconfig, Sources: cli.EnvVars(EnvKubeconfig), Destination: &g.Kubeconfig,
				Usage: "Path of the kubeconfig of the management cluster. When empty, $KUBECONFIG, ~/.kube/config or the in-cluster service account is used, as kubectl does."},
			&cli.StringFlag{Name: FlagContext, Sources: cli.EnvVars(EnvContext), Destination: &g.Context,
				Usage: "Name of the kubeconfig context to use instead of the current one."},
			&cli.StringFlag{Name: FlagLogLevel, Value: "info", Sources: cli.EnvVars(EnvLogLevel), Destination: &g.LogLevel,
				Usage: "Least severe log level written to stderr: debug, info, warn or error."},
			&cli.StringFlag{Name: FlagLogFormat, Value: logging.FormatText, Sources: cli.EnvVars(EnvLogFormat), Destination: &g.LogFormat,
				Usage: "Format of the logs on stderr: text for people, json (one object per line) for machines."},
			&cli.StringFlag{Name: FlagOutput, Aliases: []string{"o"}, Value: OutputText, Sources: cli.EnvVars(EnvOutput), Destination: &g.Output,
				Usage: "Format of the results on stdout: text, json (one event per line) or, for a dry run, markdown."},
		},
		Before: func(ctx context.Context, _ *cli.Command) (context.Context, error) {
			if err := g.Validate(); err != nil {
				return ctx, err
			}
			logger, err := logging.New(stderr, g.LogLevel, g.LogFormat)
			if err != nil {
				return ctx, exitcode.New(exitcode.Usage, err)
			}
			ctx = log.WithContext(ctx, logger)
			return context.WithValue(ctx, globalsKey{}, g), nil
		},
		Commands: []*cli.Command{
			newBackupCommand(stdin, stdout, stderr),
			newBackupsCommand(stdout),
			newPruneCommand(stdout),
			newPullNodeCommand(stdout),
			newRestoreCommand(stdin, stdout),
			newScheduleCommand(stdout),
			newVerifyCommand(stdout, stderr),
			newVersionCommand(stdout),
			newNodeFilesCommand(stdout),
		},
	}
	for _, c := range root.Commands {
		c.OnUsageError = usageError
	}
	return root
}

// usageError turns a flag parsing error into a usage error (exit 2).
func usageError(_ context.Context, cmd *cli.Command, err error, _ bool) error {
	return exitcode.Usagef("%v; run '%s --help' for usage", err, cmd.FullName())
}

// noArgs rejects positional arguments for commands that take none.
func noArgs(cmd *cli.Command) error {
	if cmd.Args().Present() {
		return exitcode.Usagef("'%s' takes no arguments, got %q; run 'hcpsnap %s --help'", cmd.Name, cmd.Args().First(), cmd.Name)
	}
	return nil
}

// options is a command's options struct, as kubectl's commands have them:
// Validate checks the flags without any I/O, Complete builds the clients,
// Run does the work.
type options interface {
	Validate() error
	Complete(context.Context) error
	Run(context.Context) error
}

// action is the whole urfave/cli action of a command: it hands the global
// options to o and calls Validate, Complete and Run, in that order.
func action(o options, global **GlobalOptions) cli.ActionFunc {
	return func(ctx context.Context, cmd *cli.Command) error {
		if err := noArgs(cmd); err != nil {
			return err
		}
		*global = globalsFrom(ctx)
		if err := o.Validate(); err != nil {
			return err
		}
		if err := o.Complete(ctx); err != nil {
			return err
		}
		return o.Run(ctx)
	}
}
