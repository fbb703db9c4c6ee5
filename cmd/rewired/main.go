// Command rewired is Rewire's node daemon: it serves the rewire CNI plugin
// over a root-only unix socket, watches this node's pods and the
// NetworkAttachmentDefinitions, runs the delegate plugins and records every
// attachment on disk.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
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
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/memlimit"
	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/pkg/multuscache"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/orphans"
	"github.com/rewire-cni/rewire/pkg/podresources"
	"github.com/rewire-cni/rewire/pkg/store"
	"github.com/rewire-cni/rewire/pkg/version"
	"github.com/rewire-cni/rewire/pkg/writebehind"
)

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
