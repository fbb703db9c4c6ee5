package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/tools/cache"

	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/daemon"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/selfgc"
)

// podCacheWait is how long self-GC's first pass waits for the pod cache
// (without it, Events go to the log only).
const podCacheWait = time.Minute

// startSelfGC starts self-GC (pkg/selfgc) unless criSocket turns it off:
// a pass once the pod cache is synced, then every gcInterval until ctx
// ends. It counts in reconciling: a release in progress finishes before
// rewired exits.
func startSelfGC(ctx context.Context, cfg *config.Config, o options, d *daemon.Daemon, pods *kube.Pods, log *slog.Logger) error {
	endpoint := cfg.CRIEndpoint()
	if endpoint == "" {
		log.Info("self-GC off (criSocket)")
		return nil
	}
	cri, err := selfgc.NewCRI(endpoint)
	if err != nil {
		return fmt.Errorf("config: criSocket: %w", err)
	}
	c := &selfgc.Collector{
		Lister: cri, Records: d.Exec.Sandboxes, Release: d.ReleaseStale,
		Grace: cfg.GCGrace.Duration, DryRun: cfg.GCDryRun,
		PodExists: func(namespace, name, uid string) bool {
			p := pods.Cached(namespace, name)
			return p != nil && (uid == "" || string(p.UID) == uid)
		},
		Events: d.Events, Log: log,
	}
	if o.podName != "" && o.podNamespace != "" {
		c.SelfNamespace, c.SelfName = o.podNamespace, o.podName
	}
	log.Info("self-GC on", "criSocket", endpoint, "interval", cfg.GCInterval.Duration, "grace", cfg.GCGrace.Duration, "dryRun", cfg.GCDryRun)
	reconciling.Add(1)
	go func() {
		defer reconciling.Done()
		wctx, cancel := context.WithTimeout(ctx, podCacheWait)
		cache.WaitForCacheSync(wctx.Done(), pods.Synced)
		cancel()
		c.Run(ctx, cfg.GCInterval.Duration)
	}()
	return nil
}
