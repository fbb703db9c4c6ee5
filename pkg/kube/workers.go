package kube

import (
	"context"
	"sync"

	"k8s.io/client-go/util/workqueue"
)

// RunWorkers runs process for the keys of q in the given number of workers
// until ctx ends. A key whose process returns retry=true is re-queued with
// the queue's backoff; otherwise its backoff is reset.
func RunWorkers(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], workers int,
	process func(ctx context.Context, key string) (retry bool)) {
	go func() { <-ctx.Done(); q.ShutDown() }()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				key, quit := q.Get()
				if quit {
					return
				}
				if process(ctx, key) {
					q.AddRateLimited(key)
				} else {
					q.Forget(key)
				}
				q.Done(key)
			}
		})
	}
	wg.Wait()
}
