package kube

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
)

var namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// Namespaces caches the metadata of every namespace (the labels that
// NetworkMigration namespace selectors match).
type Namespaces struct{ informer cache.SharedIndexInformer }

// NewNamespaces watches the namespaces' metadata.
func NewNamespaces(client metadata.Interface) *Namespaces {
	res := client.Resource(namespacesGVR)
	return &Namespaces{informer: cache.NewSharedIndexInformer(ListWatch(res.List, res.Watch), &metav1.PartialObjectMetadata{}, 0, cache.Indexers{})}
}

// Run starts the informer until ctx ends.
func (n *Namespaces) Run(ctx context.Context) { n.informer.Run(ctx.Done()) }

// Synced reports whether the first list has been received.
func (n *Namespaces) Synced() bool { return n.informer.HasSynced() }

// Labels returns a namespace's labels (nil when unknown).
func (n *Namespaces) Labels(name string) map[string]string {
	obj, ok, err := n.informer.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil
	}
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		return m.Labels
	}
	return nil
}

// ListWatch makes an informer's ListWatch from a resource client's List and
// Watch (metadata or dynamic).
func ListWatch[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return list(ctx, o)
		},
		WatchFuncWithContext: watchFn,
	}
}
