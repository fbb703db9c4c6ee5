// Package kube connects the daemon to the API server: informers for the
// node's pods and for NetworkAttachmentDefinitions (all reads on the ADD path
// come from their caches), the network-status writer and Events.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
)

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// Pod is the part of a pod Rewire reads (metadata only: the pod informer
// watches PartialObjectMetadata to keep the daemon small).
type Pod struct {
	Namespace, Name string
	UID             types.UID
	// ResourceVersion is the version of the object read.
	ResourceVersion string
	Labels          map[string]string
	Annotations     map[string]string
	// Terminating: the pod's deletion has begun.
	Terminating bool
}

// Pods serves this node's pods from an informer cache.
type Pods struct {
	client   metadata.Interface
	informer cache.SharedIndexInformer
	wait     time.Duration
	node     string
}

// NewPods watches the metadata of the pods bound to nodeName.
func NewPods(client metadata.Interface, nodeName string, wait time.Duration) *Pods {
	selector := fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	pods := client.Resource(podsGVR)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return pods.Watch(ctx, o)
		},
	}
	return &Pods{client: client, informer: newInformer(lw, &metav1.PartialObjectMetadata{}), wait: wait, node: nodeName}
}

// newInformer builds a namespaced informer without client-go's informer
// factories, which pull every typed API group into the binary (and ~10 MiB
// into the daemon's memory).
func newInformer(lw cache.ListerWatcher, obj runtime.Object) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// Informer exposes the informer (the hot-plug reconciler adds handlers).
func (p *Pods) Informer() cache.SharedIndexInformer { return p.informer }

// Run starts the informer until ctx ends.
func (p *Pods) Run(ctx context.Context) { p.informer.Run(ctx.Done()) }

// Synced reports whether the first list has been received.
func (p *Pods) Synced() bool { return p.informer.HasSynced() }

// MirrorAnnotation marks a mirror pod: the API's stand-in the kubelet
// creates for a static pod (read from a manifest on the node). Its value is
// the static pod's config hash, which is also the static pod's UID: the UID
// the runtime knows the pod by (K8S_POD_UID), while the mirror pod has its
// own.
const MirrorAnnotation = "kubernetes.io/config.mirror"

// isPod reports whether the API's pod m is the pod the runtime calls uid
// (any pod when uid is empty): the same UID, or the mirror pod of the
// static pod uid.
func isPod(m *metav1.PartialObjectMetadata, uid types.UID) bool {
	return uid == "" || m.UID == uid || m.Annotations[MirrorAnnotation] == string(uid)
}

// Get returns the pod namespace/name with the given UID (any UID when uid is
// empty), or the mirror pod of the static pod with that UID. A pod the
// cache does not have yet is waited for, then read once from the API
// server.
func (p *Pods) Get(ctx context.Context, namespace, name string, uid types.UID) (*Pod, error) {
	deadline := time.Now().Add(p.wait)
	for {
		if pod := p.cached(namespace, name, uid); pod != nil {
			return pod, nil
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	m, err := p.read(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	if !isPod(m, uid) {
		return nil, fmt.Errorf("pod %s/%s has UID %s, the runtime asked for %s", namespace, name, m.UID, uid)
	}
	return fromMeta(m), nil
}

// ErrOtherNode is Get's answer for a pod bound to another node (or to none).
var ErrOtherNode = errors.New("not bound to this node")

// read lists the pod among this node's (the metadata API has no
// spec.nodeName), then tells a pod of another node from a missing one.
func (p *Pods) read(ctx context.Context, namespace, name string) (*metav1.PartialObjectMetadata, error) {
	pods := p.client.Resource(podsGVR).Namespace(namespace)
	sel := fields.AndSelectors(fields.OneTermEqualSelector("metadata.name", name), fields.OneTermEqualSelector("spec.nodeName", p.node))
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("reading pod %s/%s: %w", namespace, name, err)
	}
	for i := range list.Items {
		if list.Items[i].Name == name {
			return &list.Items[i], nil
		}
	}
	switch _, err := pods.Get(ctx, name, metav1.GetOptions{}); {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("pod %s/%s not found", namespace, name)
	case err != nil:
		return nil, fmt.Errorf("reading pod %s/%s: %w", namespace, name, err)
	}
	return nil, fmt.Errorf("pod %s/%s is %w %s", namespace, name, ErrOtherNode, p.node)
}

func (p *Pods) cached(namespace, name string, uid types.UID) *Pod {
	obj, ok, err := p.informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok || !isPod(m, uid) {
		return nil
	}
	return fromMeta(m)
}

func fromMeta(m *metav1.PartialObjectMetadata) *Pod {
	return &Pod{Namespace: m.Namespace, Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion, Labels: m.Labels, Annotations: m.Annotations,
		Terminating: m.DeletionTimestamp != nil}
}

// Cached returns the cached pod namespace/name, or nil.
func (p *Pods) Cached(namespace, name string) *Pod { return p.cached(namespace, name, "") }

// List returns every cached pod of the node.
func (p *Pods) List() []*Pod {
	var out []*Pod
	for _, obj := range p.informer.GetStore().List() {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			out = append(out, fromMeta(m))
		}
	}
	return out
}

// Patch merge-patches the annotations of a pod (nil values remove keys).
func (p *Pods) Patch(ctx context.Context, namespace, name string, annotations map[string]interface{}) error {
	body, err := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"annotations": annotations}})
	if err != nil {
		return err
	}
	_, err = p.client.Resource(podsGVR).Namespace(namespace).Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{})
	return err
}
