package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/rewire-cni/rewire/pkg/daemon"
	"github.com/rewire-cni/rewire/pkg/dra"
	"github.com/rewire-cni/rewire/pkg/kube"
)

// startDRA gives the daemon devices from ResourceClaims and the writer of
// their networkData: the informers start once discovery says
// resource.k8s.io/v1 is served (never otherwise), and once they and the pod
// cache have synced, networkData a restart lost is queued again.
func startDRA(ctx context.Context, rc *rest.Config, dyn dynamic.Interface, d *daemon.Daemon, pods *kube.Pods, node string, log *slog.Logger) {
	claims := dra.NewCache(dyn, node, log)
	writer := dra.NewStatusWriter(dyn, claims, log)
	d.Claims, d.NetworkData = claims, writer
	go claims.Run(ctx, func(ctx context.Context) (bool, error) { return dra.Served(ctx, rc) })
	go writer.Run(ctx, 2)
	go func() {
		if !cache.WaitForCacheSync(ctx.Done(), pods.Synced, claims.Synced) {
			return
		}
		sbs, err := d.Exec.Sandboxes()
		if err != nil {
			log.Warn("networkData catch-up: reading the store", "err", err)
			return
		}
		d.CatchUpClaims(sbs, pods.Cached)
	}()
}
