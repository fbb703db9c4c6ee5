// Command kubectl-rewire is the kubectl plugin of Rewire ("kubectl rewire"):
// it shows a pod's interfaces and edits its network annotations safely
// (read-modify-write with conflict retry), then waits for the node daemon's
// outcome and prints it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rewire-cni/rewire/pkg/version"
)

const usage = `kubectl rewire: Rewire's multi-network pod tools

Usage:
  kubectl rewire status POD [-o table|json|yaml] [--node-view]
                                                    interfaces of a pod (network-status) and drift from
                                                    its annotations, the node's record and its netns
  kubectl rewire attach POD NETWORK [--ifname IF] [--ip CIDR]... [--mac MAC]
                                                    hot-plug a network into a running pod
  kubectl rewire detach POD IFNAME|NETWORK          unplug a secondary network
  kubectl rewire switch POD --to NETWORK|cluster [--mode keep-ip|readdress]
                                                    move the pod's primary network live
  kubectl rewire migrate create NAME --from NETWORK|cluster --to NETWORK|cluster [-l SELECTOR]
        [--namespaces NS,...] [--namespace-selector SELECTOR] [--node-selector SELECTOR] [--max-per-node N] [--allow-readdress]
        [--drain-timeout D] [--new-pods from|to] [--paused]
                                                    move many pods (NetworkMigration), node by node
  kubectl rewire migrate pause|resume|rollback NAME
  kubectl rewire migrate status NAME [-w] [-o table|json|yaml]
  kubectl rewire doctor [NODE] [--daemon-namespace kube-system] [--daemon-selector app=rewire]
                                                    the nodes' self-checks and version skew
  kubectl rewire version                            this plugin's version

Common flags: -n/--namespace, --kubeconfig, --context, --timeout (default 60s).
NETWORK is a NetworkAttachmentDefinition, "name" or "namespace/name".
`

// cli holds what every command needs.
type cli struct {
	client    corev1client.CoreV1Interface
	rest      *rest.Config
	dyn       dynamic.Interface
	namespace string
	timeout   time.Duration
	out       io.Writer
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// command is one subcommand: its flags are added to fs, then it runs with
// the positional arguments.
type command struct {
	args  int // positional arguments (-1: zero or one)
	flags func(fs *pflag.FlagSet) func(c *cli, args []string) error
}

var commands = map[string]command{
	"status":           {1, statusFlags},
	"attach":           {2, attachFlags},
	"detach":           {2, detachFlags},
	"switch":           {1, switchFlags},
	"migrate create":   {1, migrateCreateFlags},
	"migrate pause":    {1, migrateSet(map[string]interface{}{"paused": true}, "paused")},
	"migrate resume":   {1, migrateSet(map[string]interface{}{"paused": false}, "resumed")},
	"migrate rollback": {1, migrateSet(map[string]interface{}{"rollback": true, "paused": false}, "rolling back")},
	"migrate status":   {1, migrateStatusFlags},
	"doctor":           {-1, doctorFlags},
}

func run(argv []string, out io.Writer) error {
	if len(argv) == 0 || argv[0] == "-h" || argv[0] == "--help" || argv[0] == "help" {
		fmt.Fprint(out, usage)
		return nil
	}
	if argv[0] == "version" {
		if len(argv) > 1 {
			return fmt.Errorf("version takes no arguments\n\n%s", usage)
		}
		fmt.Fprintf(out, "kubectl-rewire %s\n", version.String())
		return nil
	}
	if argv[0] == "migrate" && len(argv) > 1 {
		argv = append([]string{"migrate " + argv[1]}, argv[2:]...)
	}
	cmd, ok := commands[argv[0]]
	if !ok {
		return fmt.Errorf("unknown command %q\n\n%s", argv[0], usage)
	}
	fs := pflag.NewFlagSet("kubectl rewire "+argv[0], pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	namespace := fs.StringP("namespace", "n", "", "the pod's namespace (default: the context's)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the node daemon's outcome")
	runCmd := cmd.flags(fs)
	if err := fs.Parse(argv[1:]); err != nil {
		return fmt.Errorf("%w\n\n%s", err, usage)
	}
	if fs.NArg() != cmd.args && !(cmd.args == -1 && fs.NArg() <= 1) {
		return fmt.Errorf("%s takes %d argument(s), got %d\n\n%s", argv[0], cmd.args, fs.NArg(), usage)
	}
	c, err := connect(*kubeconfig, *kubeContext, *namespace)
	if err != nil {
		return err
	}
	c.timeout, c.out = *timeout, out
	return runCmd(c, fs.Args())
}

// connect builds the client as kubectl does: kubeconfig loading rules, the
// context's namespace unless -n is given.
func connect(kubeconfig, kubeContext, namespace string) (*cli, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	restConfig, err := cfg.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if namespace == "" {
		if namespace, _, err = cfg.Namespace(); err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
	}
	client, err := corev1client.NewForConfig(restConfig)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(restConfig)
	if err != nil {
		return nil, err
	}
	return &cli{client: client, dyn: dyn, rest: restConfig, namespace: namespace}, nil
}

func (c *cli) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

// errFailed is returned when the daemon reported a failure (already printed).
var errFailed = errors.New("the node daemon reported a failure")
