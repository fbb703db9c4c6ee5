package kube

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/planner"
)

// NADReadTimeout bounds the API read of a NAD missing from the cache (the
// ADD path waits for it; an unreachable API server must not hold it).
const NADReadTimeout = 10 * time.Second

// Networks resolves NetworkAttachmentDefinitions from an informer cache,
// memoising each parsed config by resourceVersion.
type Networks struct {
	client   dynamic.Interface
	informer cache.SharedIndexInformer
	confDir  string
	// confDirAllowed says which namespaces' NADs may take their config
	// from confDir (nil: every namespace).
	confDirAllowed nad.ConfDirPolicy

	mu     sync.Mutex
	parsed map[string]parsedNet
}

type parsedNet struct {
	rv  string
	net *planner.Network
	err error
}

// NewNetworks watches NADs in all namespaces. confDir is where a NAD without
// spec.config finds its config by name, when confDirAllowed (nil: always)
// lets the NAD's namespace do so.
func NewNetworks(client dynamic.Interface, confDir string, confDirAllowed nad.ConfDirPolicy) *Networks {
	nads := client.Resource(nad.GVR)
	n := &Networks{
		client: client, confDir: confDir, confDirAllowed: confDirAllowed, parsed: map[string]parsedNet{},
		informer: newInformer(ListWatch(nads.List, nads.Watch), &unstructured.Unstructured{}),
	}
	_, _ = n.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: n.forget})
	return n
}

// Run starts the informer until ctx ends.
func (n *Networks) Run(ctx context.Context) { n.informer.Run(ctx.Done()) }

// Synced reports whether the first list has been received.
func (n *Networks) Synced() bool { return n.informer.HasSynced() }

// Lookup implements planner.Lookup.
func (n *Networks) Lookup(namespace, name string) (*planner.Network, error) {
	key := namespace + "/" + name
	obj, ok, err := n.informer.GetIndexer().GetByKey(key)
	if err != nil {
		return nil, err
	}
	if !ok {
		// Not in the cache: the NAD may have been created an instant ago.
		ctx, cancel := context.WithTimeout(context.Background(), NADReadTimeout)
		defer cancel()
		u, err := n.client.Resource(nad.GVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("NetworkAttachmentDefinition %s %w", key, planner.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("reading NetworkAttachmentDefinition %s: %w", key, err)
		}
		obj = u
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("NetworkAttachmentDefinition %s: unexpected cache object %T", key, obj)
	}
	return n.resolve(key, u)
}

// resolve parses a NAD. Inline configs are memoised per resourceVersion; a
// NAD without spec.config reads a file that may change, so it is re-read.
func (n *Networks) resolve(key string, u *unstructured.Unstructured) (*planner.Network, error) {
	rv := u.GetResourceVersion()
	n.mu.Lock()
	p, ok := n.parsed[key]
	n.mu.Unlock()
	if ok && p.rv == rv {
		return p.net, p.err
	}
	def, err := nad.FromUnstructured(u.Object)
	if err != nil {
		return nil, err
	}
	list, err := nad.Resolve(def, n.confDir, n.confDirAllowed)
	p = parsedNet{rv: rv, err: err}
	if err == nil {
		p.net = &planner.Network{Key: key, ConfList: list, ResourceName: def.ResourceName()}
	}
	if def.Spec.Config != "" {
		n.mu.Lock()
		n.parsed[key] = p
		n.mu.Unlock()
	}
	return p.net, p.err
}

func (n *Networks) forget(obj interface{}) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		n.mu.Lock()
		delete(n.parsed, key)
		n.mu.Unlock()
	}
}
