package main

import (
	"context"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/migration"
)

// watchMigrationProgress feeds rewire_migration_pods from the
// NetworkMigrations' status as this node last reported it there, read from
// an informer's cache at each scrape: a migration deleted takes its series
// with it. (The controller's own bookkeeping is internal to it.)
func watchMigrationProgress(ctx context.Context, dyn dynamic.Interface, node string) {
	res := dyn.Resource(migration.GVR)
	inf := cache.NewSharedIndexInformer(kube.ListWatch(res.List, res.Watch), &unstructured.Unstructured{}, 0, cache.Indexers{})
	go inf.Run(ctx.Done())
	metrics.MigrationPods.SetFunc(migrationProgress(inf.GetStore().List, node))
}

// migrationProgress returns the scrape function of rewire_migration_pods:
// for every migration this node has reported on, its counts by state.
func migrationProgress(list func() []interface{}, node string) func(set func(v float64, labels ...string)) {
	return func(set func(v float64, labels ...string)) {
		for _, obj := range list() {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			m, err := migration.FromUnstructured(u)
			if err != nil {
				continue // the controller logs it
			}
			ns, ok := m.Status.Nodes[node]
			if !ok {
				continue
			}
			for _, s := range []struct {
				state string
				n     int
			}{
				{"total", ns.Total}, {"switched", ns.Switched}, {"failed", ns.Failed},
				{"skipped", ns.Skipped}, {"remaining", ns.Remaining}, {"switching", ns.Switching},
			} {
				set(float64(s.n), m.Name, s.state)
			}
		}
	}
}
