package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/rewire-cni/rewire/pkg/inspect"
	"github.com/rewire-cni/rewire/pkg/install"
	"github.com/rewire-cni/rewire/pkg/offline"
	"github.com/rewire-cni/rewire/pkg/pidone"
	"github.com/rewire-cni/rewire/pkg/store"
	"github.com/rewire-cni/rewire/pkg/version"
	"github.com/rewire-cni/rewire/pkg/wire"
)

// options are the daemon's command-line flags (daemonFlags).
type options struct {
	kubeconfig, nodeName, socket, stateDir, configFile, logLevel, testFaults, metricsAddr string
	podName, podNamespace                                                                 string
	doctorInterval                                                                        time.Duration
	// logLevelSet: --log-level was given (it then overrides the config's).
	logLevelSet bool
}

// subcommand is one of rewired's commands besides the daemon itself.
type subcommand struct {
	name, args, summary string
	run                 func(args []string, stdout io.Writer) error
}

// subcommands lists them in the order --help shows them.
var subcommands = []subcommand{
	{"install", "[flags]", "put the rewire plugin and Rewire's CNI config on the host (the DaemonSet's init step)", runInstall},
	{"inspect", "[--state-dir DIR] POD-UID", "a pod's recorded attachments and its netns' interfaces, as JSON (kubectl rewire status runs it)", runInspect},
	{"version", "", "print rewired's version", runVersion},
	{"help", "", "print this help", nil},
}

func main() {
	if filepath.Base(os.Args[0]) == install.OfflineName {
		out, code := offline.Del(os.Getenv, os.Stdin)
		os.Stdout.Write(out)
		os.Exit(code)
	}
	os.Exit(rewired(os.Args[1:], os.Stdout, os.Stderr, daemonOrInit))
}

// daemonOrInit runs the daemon or, as PID 1 of its PID namespace (its
// container's first process), the supervisor that runs the daemon as its
// child, so that a killed daemon does not take its delegates with it
// (package pidone).
func daemonOrInit(o options) error {
	if pidone.Needed() {
		os.Exit(pidone.Run(os.Args, pidone.Defaults, slog.New(slog.NewJSONHandler(os.Stderr, nil))))
	}
	return run(o)
}

// rewired runs a subcommand, or parses the daemon's flags and calls
// daemon; it returns the exit code (0 for --help, 2 for bad flags).
func rewired(args []string, stdout, stderr io.Writer, daemon func(options) error) int {
	var o options
	fs := daemonFlags(&o)
	if len(args) > 0 {
		if args[0] == "help" {
			usage(stdout, fs)
			return 0
		}
		for _, c := range subcommands {
			if c.name != args[0] || c.run == nil {
				continue
			}
			err := c.run(args[1:], stdout)
			if errors.Is(err, flag.ErrHelp) {
				return 0 // the flag set printed its usage
			}
			if err != nil {
				fmt.Fprintf(stderr, "rewired %s: %v\n", c.name, err)
				return 1
			}
			return 0
		}
	}
	fs.SetOutput(io.Discard)
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		usage(stdout, fs)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "rewired: %v\n\n", err)
		usage(stderr, fs)
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "rewired: unknown command %q\n\n", fs.Arg(0))
		usage(stderr, fs)
		return 2
	}
	fs.Visit(func(f *flag.Flag) { o.logLevelSet = o.logLevelSet || f.Name == "log-level" })
	if err := daemon(o); err != nil {
		fmt.Fprintln(stderr, "rewired:", err)
		return 1
	}
	return 0
}

// daemonFlags are the daemon's flags, written into o.
func daemonFlags(o *options) *flag.FlagSet {
	host, _ := os.Hostname()
	if n := os.Getenv("NODE_NAME"); n != "" {
		host = n
	}
	fs := flag.NewFlagSet("rewired", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	fs.StringVar(&o.nodeName, "node-name", host, "this node's name (default $NODE_NAME or the hostname)")
	fs.StringVar(&o.socket, "socket-path", wire.DefaultSocket, "unix socket the rewire plugin connects to")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/rewire", "attachment store and libcni cache directory")
	fs.StringVar(&o.configFile, "config", "/etc/rewire/config.yaml", "daemon config file (YAML or JSON)")
	fs.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error (default: the config's logLevel, else info)")
	fs.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "rewired's own pod, where it publishes its self-check (default $POD_NAME; empty: none)")
	fs.StringVar(&o.podNamespace, "pod-namespace", os.Getenv("POD_NAMESPACE"), "rewired's own pod's namespace (default $POD_NAMESPACE)")
	fs.DurationVar(&o.doctorInterval, "doctor-interval", time.Minute, "how often the self-check is published")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "also serve /metrics, /healthz and /readyz over TCP on this address (e.g. :9721; empty: only on the socket)")
	fs.StringVar(&o.testFaults, "test-faults", "", "TESTS ONLY: STEP=kill|fail|delay:DURATION,... crash, fail or hold at named steps")
	return fs
}

// usage writes rewired's help: what it is, its subcommands, the daemon's
// flags.
func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, `rewired %s: Rewire's node daemon. It serves the rewire CNI plugin over a
root-only unix socket, watches this node's pods and the NetworkAttachmentDefinitions,
runs the delegate plugins and records every attachment on disk.

Usage:
  rewired [flags]            run the daemon
  rewired COMMAND [args]

Commands:
`, version.String())
	for _, c := range subcommands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
		if c.args != "" {
			fmt.Fprintf(w, "  %-9s   rewired %s %s\n", "", c.name, c.args)
		}
	}
	fmt.Fprintf(w, "\nInstalled as %s next to the plugin, it deletes a sandbox's attachments while no daemon runs.\n\nFlags:\n", install.OfflineName)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// runVersion is "rewired version".
func runVersion(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("takes no arguments, got %q", args)
	}
	fmt.Fprintf(stdout, "rewired %s (%s, %s/%s)\n", version.String(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// runInspect is "rewired inspect POD-UID": the pod's recorded attachments
// and its netns' interfaces as JSON (kubectl rewire status runs it).
func runInspect(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "/var/lib/rewire", "rewired's state dir")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: rewired inspect [--state-dir DIR] POD-UID")
	}
	st, err := store.Open(*stateDir, true)
	if err != nil {
		return err
	}
	r, err := inspect.Pod(st, fs.Arg(0))
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(r)
}

// runInstall is "rewired install": put the plugin and Rewire's CNI config on
// the host (the DaemonSet's init step).
func runInstall(args []string, stdout io.Writer) error {
	self, _ := os.Executable()
	o := install.Options{}
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.StringVar(&o.Plugin, "plugin", filepath.Join(filepath.Dir(self), "rewire"), "the rewire plugin binary to install (the C one; the Go plugin it runs is taken from the same directory as "+install.GoPluginName+")")
	fs.StringVar(&o.Offline, "offline", self, "rewired itself, installed as "+install.OfflineName+" for DELs while no daemon runs (empty: none)")
	fs.StringVar(&o.StateDir, "host-state-dir", "/var/lib/rewire", "rewired's state dir as seen on the host")
	fs.StringVar(&o.BinDir, "bin-dir", "/opt/cni/bin", "the host's CNI bin dir")
	fs.StringVar(&o.ConfDir, "conf-dir", "/etc/cni/net.d", "the host's CNI conf dir")
	fs.StringVar(&o.ConfName, "conf-name", "00-rewire.conflist",
		"Rewire's config file (sorts first); comma-separated names: written over the first of them found in the conf dir, else as the first")
	fs.StringVar(&o.Socket, "socket-path", wire.DefaultSocket, "the daemon socket, as seen on the host")
	fs.StringVar(&o.CNIVersion, "cni-version", "1.1.0", "cniVersion of Rewire's config")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.ConfName = install.Target(o.ConfDir, o.ConfName)
	if err := install.Run(o); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "installed %s and %s\n", filepath.Join(o.BinDir, "rewire"), filepath.Join(o.ConfDir, o.ConfName))
	return nil
}
