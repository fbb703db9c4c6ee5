package dra

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
)

// ErrNotReady says the DRA view cannot answer yet: the API's discovery has
// not answered, or the caches have not synced.
var ErrNotReady = errors.New("the ResourceClaim and ResourceSlice caches are not ready")

// Whether resource.k8s.io/v1 is served.
const (
	apiUnknown int32 = iota
	apiAbsent
	apiServed
)

const (
	byPod  = "pod"  // claims by the UID of a pod they are reserved for
	byPool = "pool" // slices by driver/pool
)

// Cache is a node's view of DRA: every ResourceClaim (those allocated to
// another node as their names alone), indexed by the pods they are
// reserved for, and the node's own ResourceSlices (spec.nodeName; devices
// of slices for several nodes are not seen, as in Multus).
type Cache struct {
	node   string
	log    *slog.Logger
	claims cache.SharedIndexInformer
	slices cache.SharedIndexInformer
	api    atomic.Int32
}

// NewCache builds the informers of node's view; Run starts them.
func NewCache(client dynamic.Interface, node string, log *slog.Logger) *Cache {
	c := &Cache{node: node, log: log}
	claims := client.Resource(ClaimsGVR)
	c.claims = newInformer(claims.List, claims.Watch, "", cache.Indexers{byPod: indexByPod})
	c.slices = newInformer(client.Resource(SlicesGVR).List, client.Resource(SlicesGVR).Watch,
		fields.OneTermEqualSelector("spec.nodeName", node).String(), cache.Indexers{byPool: indexByPool})
	_ = c.claims.SetTransform(func(obj interface{}) (interface{}, error) { return claimFrom(obj, node) })
	_ = c.slices.SetTransform(func(obj interface{}) (interface{}, error) { return sliceFrom(obj) })
	return c
}

type listFunc func(context.Context, metav1.ListOptions) (*unstructured.UnstructuredList, error)
type watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error)

// newInformer is an informer of unstructured objects (turned into slim ones
// by its transform), with a field selector when one is given.
func newInformer(list listFunc, watchFn watchFunc, selector string, indexers cache.Indexers) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return watchFn(ctx, o)
		},
	}
	return cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, 0, indexers)
}

func indexByPod(obj interface{}) ([]string, error) {
	if c, ok := obj.(*Claim); ok {
		return c.podUIDs(), nil
	}
	return nil, nil
}

func indexByPool(obj interface{}) ([]string, error) {
	if s, ok := obj.(*Slice); ok {
		return []string{s.Spec.Driver + "/" + s.Spec.Pool.Name}, nil
	}
	return nil, nil
}

// Run asks served whether resource.k8s.io/v1 exists, again with backoff
// until it answers, and then, if it does, runs the informers until ctx ends.
func (c *Cache) Run(ctx context.Context, served func(context.Context) (bool, error)) {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		ok, err := served(ctx)
		if err == nil && !ok {
			c.api.Store(apiAbsent)
			c.log.Info("resource.k8s.io/v1 is not served: no devices from DRA")
			return
		}
		if err == nil {
			break
		}
		c.log.Warn("discovering resource.k8s.io/v1, will retry", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	c.api.Store(apiServed)
	go c.slices.Run(ctx.Done())
	c.claims.Run(ctx.Done())
}

// Served reports whether DRA may give a pod devices: resource.k8s.io/v1 is
// served, or discovery has not answered yet.
func (c *Cache) Served() bool { return c.api.Load() != apiAbsent }

// Synced reports whether the cache can answer: the API is not served, or
// both informers have their first list.
func (c *Cache) Synced() bool {
	switch c.api.Load() {
	case apiAbsent:
		return true
	case apiServed:
		return c.claims.HasSynced() && c.slices.HasSynced()
	}
	return false
}

// PodDevices returns the CNI devices of the claims reserved for the pod
// with the given UID (none when the API is not served).
func (c *Cache) PodDevices(uid types.UID) (PodDevices, error) {
	if c.api.Load() == apiAbsent {
		return PodDevices{}, nil
	}
	if !c.Synced() {
		return PodDevices{}, ErrNotReady
	}
	objs, err := c.claims.GetIndexer().ByIndex(byPod, string(uid))
	if err != nil {
		return PodDevices{}, err
	}
	claims := make([]*Claim, 0, len(objs))
	for _, o := range objs {
		if cl, ok := o.(*Claim); ok {
			claims = append(claims, cl)
		}
	}
	return Resolve(claims, c.lookup), nil
}

// lookup finds an allocated device in the node's slices.
func (c *Cache) lookup(driver, pool, device string) (SliceDevice, bool) {
	objs, err := c.slices.GetIndexer().ByIndex(byPool, driver+"/"+pool)
	if err != nil {
		return SliceDevice{}, false
	}
	slices := make([]*Slice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*Slice); ok {
			slices = append(slices, s)
		}
	}
	return findDevice(slices, device)
}

// Claim returns the cached claim namespace/name.
func (c *Cache) Claim(namespace, name string) (*Claim, bool) {
	if c.api.Load() != apiServed {
		return nil, false
	}
	obj, ok, err := c.claims.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	cl, ok := obj.(*Claim)
	return cl, ok
}
