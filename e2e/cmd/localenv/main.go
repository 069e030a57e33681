// Command localenv starts and stops hcpsnap's local environment (`up`,
// `down`) and is also the executable of its two simulated pieces: it runs
// again as `nodeagent` and as `operator`, and as the node agent's hidden
// `sandbox-exec` helper that enters a pod's private mount namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/charmbracelet/log"

	"github.com/hcpsnap/hcpsnap/e2e/localenv"
	"github.com/hcpsnap/hcpsnap/e2e/nodeagent"
	"github.com/hcpsnap/hcpsnap/e2e/operator"
)

const usage = `usage: localenv <command> [flags]

commands:
  up          start the environment (configured by LOCALENV_DIR, LOCALENV_BIN_DIR,
              LOCALENV_CRD_DIR, HCPSNAP_CLUSTER, HCPSNAP_NAMESPACE, HCPSNAP_BUCKET,
              ETCD_DATA_MB, API_REPLICAS) and write $LOCALENV_DIR/env
  down        stop the environment and check that nothing is left behind
  running     exit 0 when an environment is running, 1 otherwise
  stop NAME   stop one daemon (minio, kube-apiserver, ...) of the running environment
  start NAME  start a daemon stopped by 'stop' again, as it was
  nodeagent   run the node agent (started by up)
  operator    run the operator stand-in (started by up)
`

func main() {
	// The sandbox helper replaces itself with the pod's command: it must run
	// before anything else and exit with the command's conventions.
	if len(os.Args) > 1 && os.Args[1] == nodeagent.SandboxSubcommand {
		err := nodeagent.SandboxMain(os.Args[2:])
		fmt.Fprintln(os.Stderr, err)
		var se *nodeagent.SandboxError
		if errors.As(err, &se) {
			os.Exit(se.ExitCode())
		}
		os.Exit(125)
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	logger := log.NewWithOptions(os.Stderr, log.Options{ReportTimestamp: true, TimeFormat: time.TimeOnly, Prefix: os.Args[1]})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:], logger); err != nil {
		logger.Error(err.Error())
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, args []string, logger *log.Logger) error {
	switch cmd {
	case "running":
		cfg, err := localenv.ConfigFromEnv()
		if err != nil {
			return err
		}
		if !localenv.Running(cfg) {
			os.Exit(1)
		}
		return nil
	case "stop", "start":
		cfg, err := localenv.ConfigFromEnv()
		if err != nil {
			return err
		}
		if len(args) != 1 {
			return fmt.Errorf("usage: localenv %s NAME", cmd)
		}
		if cmd == "stop" {
			return cfg.Stop(args[0])
		}
		return cfg.Start(args[0])
	case "up", "down":
		cfg, err := localenv.ConfigFromEnv()
		if err != nil {
			return err
		}
		if cmd == "up" {
			return localenv.Up(ctx, cfg, logger)
		}
		return localenv.Down(cfg, logger)
	case "nodeagent":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		cfg := nodeagent.Config{Log: logger}
		fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "admin kubeconfig")
		fs.StringVar(&cfg.NodeName, "node-name", localenv.NodeName, "name of the Node")
		fs.StringVar(&cfg.Listen, "listen", fmt.Sprintf("127.0.0.1:%d", localenv.NodeAgentPort), "kubelet API address")
		fs.StringVar(&cfg.CertFile, "cert", "", "serving certificate")
		fs.StringVar(&cfg.KeyFile, "key", "", "serving key")
		fs.StringVar(&cfg.ClientCAFile, "client-ca", "", "CA of accepted client certificates")
		fs.StringVar(&cfg.StateDir, "state-dir", "", "per-pod state folder")
		layouts := fs.String("image-layouts", "", "comma-separated OCI image layouts of digest-pinned images")
		_ = fs.Parse(args)
		for _, l := range strings.Split(*layouts, ",") {
			if l != "" {
				cfg.ImageLayouts = append(cfg.ImageLayouts, l)
			}
		}
		return nodeagent.Run(ctx, cfg)
	case "operator":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		cfg := operator.Config{Log: logger}
		fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "admin kubeconfig")
		fs.DurationVar(&cfg.Interval, "interval", time.Second, "reconcile interval")
		_ = fs.Parse(args)
		return operator.Run(ctx, cfg)
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
