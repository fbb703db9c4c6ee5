// Command rewired is Rewire's node daemon: it serves the rewire CNI plugin
// over a root-only unix socket, watches this node's pods and the
// NetworkAttachmentDefinitions, runs the delegate plugins and records every
// attachment on disk.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	cniversion "github.com/containernetworking/cni/pkg/version"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/daemon"
	"github.com/rewire-cni/rewire/pkg/devinfo"
	"github.com/rewire-cni/rewire/pkg/doctor"
	"github.com/rewire-cni/rewire/pkg/executor"
	"github.com/rewire-cni/rewire/pkg/fault"
	"github.com/rewire-cni/rewire/pkg/inspect"
	"github.com/rewire-cni/rewire/pkg/install"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/memlimit"
	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/pkg/multuscache"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/offline"
	"github.com/rewire-cni/rewire/pkg/orphans"
	"github.com/rewire-cni/rewire/pkg/pidone"
	"github.com/rewire-cni/rewire/pkg/podresources"
	"github.com/rewire-cni/rewire/pkg/store"
	"github.com/rewire-cni/rewire/pkg/version"
	"github.com/rewire-cni/rewire/pkg/wire"
	"github.com/rewire-cni/rewire/pkg/writebehind"
)

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

func run(o options) error {
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return err
	}
	level, err := logLevel(o.logLevel, o.logLevelSet, cfg)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if len(cfg.Ignored) > 0 {
		log.Info("Multus configuration keys without a meaning for Rewire, ignored", "keys", cfg.Ignored)
	}
	unlock, err := lockStateDir(o.stateDir, log)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := store.New(o.stateDir, cfg.StoreSync)
	if err != nil {
		return err
	}
	// An explicit exec: libcni sets a nil one lazily, which races under
	// concurrent requests.
	pluginExec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: cniversion.PluginDecoder{}}
	// GuardExec: never run Rewire's own binaries as a delegate (a record
	// from an older version may name them). WithCNIArgs: an attachment's
	// own CNI_ARGS (Multus's IP= and MAC=) reach its plugins. leancni:
	// libcni with a cheaper ADD.
	cacheDir := store.CacheDir(o.stateDir)
	cacheFiles, err := writebehind.Open(store.CacheJournal(o.stateDir)) // replays what a crash left
	if err != nil {
		return fmt.Errorf("libcni's cache: %w", err)
	}
	lean := leancni.New(cfg.BinDirs, cacheDir,
		executor.Limited(executor.Timed(nad.GuardExec(pluginExec)), delegateSlots(cfg, log))).WriteBehind(cacheFiles)
	cni := attachment.WithCNIArgs(lean)
	exec := executor.New(cni, st, log)
	exec.Foreign = multuscache.Source{Dir: cfg.CNIDir, CacheDir: cacheDir} // pods Multus networked
	exec.CacheDir, exec.Cache = cacheDir, lean
	exec.BinDirs = cfg.BinDirs
	if o.testFaults != "" {
		in, err := fault.Parse(o.testFaults)
		if err != nil {
			return err
		}
		log.Warn("fault injection enabled (tests only)", "faults", o.testFaults)
		exec.Fault = in.At
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	self, err := orphans.Mark()
	if err != nil {
		return err
	}
	if pids := orphans.Running(self); len(pids) > 0 {
		log.Info("waiting for the delegates a previous rewired left running", "pids", pids)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = orphans.Wait(wctx, self)
	cancel()
	if err != nil {
		log.Warn("recovering anyway", "err", err)
	}
	if n, err := exec.Recover(ctx); n > 0 || err != nil {
		log.Info("recovered interrupted ADDs", "count", n, "err", err)
	}

	rc, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	d, pods, err := setup(ctx, rc, cfg, o, exec, log)
	if err != nil {
		return err
	}
	go func() {
		if !cache.WaitForCacheSync(ctx.Done(), pods.Synced) {
			return
		}
		sbs, _ := exec.Sandboxes()
		if n := d.CatchUp(sbs, pods.Cached); n > 0 {
			log.Info("re-queued network-status after restart", "pods", n)
		}
	}()
	if o.podName != "" && o.podNamespace != "" {
		go publishDoctor(ctx, d, pods, o, log)
	}
	if err := startSelfGC(ctx, cfg, o, d, pods, log); err != nil {
		return err
	}
	if o.metricsAddr != "" {
		go serveMetrics(ctx, d.MetricsServer(o.metricsAddr), log)
	}
	err = serve(ctx, d, o.socket, log)
	// Record and cache files not written yet: inspect and the no-daemon
	// DEL read them (the journals would restore them too).
	return errors.Join(err, st.Flush(), cacheFiles.Close())
}

// logLevel is --log-level when given, else the config's logLevel (Multus's
// names included), else info.
func logLevel(flagValue string, given bool, cfg *config.Config) (slog.Level, error) {
	if !given {
		return cfg.Level()
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(flagValue)); err != nil {
		return level, fmt.Errorf("--log-level: %w", err)
	}
	return level, nil
}

// publishDoctor writes the node's self-check on rewired's own pod every
// interval ("kubectl rewire doctor" reads it).
func publishDoctor(ctx context.Context, d *daemon.Daemon, pods *kube.Pods, o options, log *slog.Logger) {
	t := time.NewTicker(o.doctorInterval)
	defer t.Stop()
	for {
		r := doctor.Report{Node: o.nodeName, Version: version.String(), Time: time.Now().UTC().Format(time.RFC3339), Checks: d.Doctor(ctx)}
		b, _ := json.Marshal(r)
		if err := pods.Patch(ctx, o.podNamespace, o.podName, map[string]interface{}{doctor.Annotation: string(b)}); err != nil {
			log.Warn("publishing the self-check", "pod", o.podNamespace+"/"+o.podName, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// serveMetrics serves the TCP metrics endpoint until ctx ends.
func serveMetrics(ctx context.Context, srv *http.Server, log *slog.Logger) {
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.Info("serving metrics", "addr", srv.Addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics endpoint", "err", err)
	}
}

// reconciling ends when the hot-plug workers have finished their last pod
// (and self-GC its last release).
var reconciling sync.WaitGroup

// setup builds the API clients, informers and the daemon.
func setup(ctx context.Context, rc *rest.Config, cfg *config.Config, o options, exec *executor.Executor, log *slog.Logger) (*daemon.Daemon, *kube.Pods, error) {
	counter := &kube.APICounter{}
	rc.Wrap(counter.Wrap)
	meta, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	pods := kube.NewPods(meta, o.nodeName, cfg.PodWait.Duration)
	nets := kube.NewNetworks(dyn, cfg.ConfDir, cfg.ConfDirAllowed)
	status := kube.NewStatusWriter(meta, log)
	events := kube.NewEvents(dyn, o.nodeName, log)
	go pods.Run(ctx)
	go nets.Run(ctx)
	go status.Run(ctx, 4)
	go events.Run(ctx)
	d := &daemon.Daemon{
		Config: cfg, Exec: exec, Pods: pods, Networks: daemon.ClusterChainLookup(cfg, nets.Lookup), NetworksSynced: nets.Synced,
		Status: status, Events: events,
		Devices: &podresources.Client{Socket: cfg.PodResourcesSocket},
		DevInfo: devinfo.Dir(cfg.DeviceInfoDir), Log: log, APICounts: counter.Snapshot,
	}
	startDRA(ctx, rc, dyn, d, pods, o.nodeName, log)
	rec := daemon.NewReconciler(d, pods.Cached)
	d.View = rec.View
	if err := rec.Watch(pods.Informer()); err != nil {
		return nil, nil, err
	}
	d.OnAdded = rec.Enqueue
	namespaces := kube.NewNamespaces(meta)
	go namespaces.Run(ctx)
	watchMigrationProgress(ctx, dyn, o.nodeName)
	mig := migration.New(dyn, d.MigrationNode(o.nodeName, nodeLabels(ctx, meta, o.nodeName, log), pods, namespaces, rec))
	d.NewPodNetwork = mig.NewPodNetwork
	reconciling.Add(1)
	go func() { defer reconciling.Done(); rec.Run(ctx, 2) }()
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), pods.Synced, nets.Synced, namespaces.Synced) {
			mig.Run(ctx, 250*time.Millisecond)
		}
	}()
	return d, pods, nil
}

// nodeLabels reads this node's labels once (for NetworkMigration node
// selectors); without a Node object they are empty.
func nodeLabels(ctx context.Context, meta metadata.Interface, node string, log *slog.Logger) map[string]string {
	m, err := meta.Resource(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}).Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		log.Info("no node labels (NetworkMigration node selectors see none)", "node", node, "err", err)
		return nil
	}
	return m.Labels
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	rc.UserAgent = "rewired"
	rc.QPS, rc.Burst = 50, 100
	return rc, nil
}

func serve(ctx context.Context, d *daemon.Daemon, socket string, log *slog.Logger) error {
	l, err := daemon.Listen(socket)
	if err != nil {
		return err
	}
	srv := d.Server()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	log.Info("rewired serving", "socket", socket)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Let in-flight CNI requests finish; a DEL must not be cut short.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	reconciling.Wait() // a plug in progress finishes (or is undone at the next start)
	return nil
}

// lockStateDir takes the state dir's writer lock for the daemon's life,
// waiting (and saying so) while another rewired or a no-daemon DEL holds it:
// a rolling update with surge starts the new daemon beside the old one.
func lockStateDir(dir string, log *slog.Logger) (func(), error) {
	unlock, err := store.LockDir(dir, false)
	if errors.Is(err, store.ErrLocked) {
		log.Info("waiting for the state dir: another process holds it", "stateDir", dir)
		unlock, err = store.LockDir(dir, true)
	}
	return unlock, err
}

// delegateSlots is the cap on delegates running at once: the configured
// one, or else one derived from the memory limit of rewired's cgroup.
func delegateSlots(cfg *config.Config, log *slog.Logger) int {
	if cfg.MaxConcurrentDelegates != nil {
		return *cfg.MaxConcurrentDelegates
	}
	limit, ok, err := memlimit.OwnFromProc()
	if err != nil {
		log.Warn("reading rewired's memory limit: delegates not capped", "err", err)
		return 0
	}
	if !ok {
		log.Info("no memory limit on rewired's cgroup: delegates not capped")
		return 0
	}
	n := memlimit.Slots(limit)
	log.Info("delegates capped by rewired's memory limit", "maxConcurrentDelegates", n, "memoryLimitMiB", limit>>20)
	return n
}
