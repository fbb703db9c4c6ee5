package kube

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/util/workqueue"

	"github.com/rewire-cni/rewire/pkg/netstatus"
)

// StatusWriter writes the network-status annotation off the CNI path: Set
// queues the latest value of a pod and returns at once; workers PATCH it
// (one merge patch, guarded by the pod UID) and retry with backoff while the
// API server is unreachable. Only the newest value of a pod is ever written.
type StatusWriter struct {
	client metadata.Interface
	queue  workqueue.TypedRateLimitingInterface[string]
	log    *slog.Logger

	mu      sync.Mutex
	pending map[string]pendingStatus
	// Writes counts PATCH requests sent.
	Writes atomic.Int64
}

type pendingStatus struct {
	namespace, name string
	uid             types.UID
	value           string
}

// NewStatusWriter returns a writer patching pods through client.
func NewStatusWriter(client metadata.Interface, log *slog.Logger) *StatusWriter {
	return &StatusWriter{
		client:  client,
		log:     log,
		pending: map[string]pendingStatus{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "network-status"}),
	}
}

// Set queues the network-status of a pod.
func (w *StatusWriter) Set(namespace, name string, uid types.UID, value string) {
	key := namespace + "/" + name
	w.mu.Lock()
	w.pending[key] = pendingStatus{namespace: namespace, name: name, uid: uid, value: value}
	w.mu.Unlock()
	w.queue.Add(key)
}

// Forget drops a queued status (the pod's sandbox is gone).
func (w *StatusWriter) Forget(namespace, name string) {
	w.mu.Lock()
	delete(w.pending, namespace+"/"+name)
	w.mu.Unlock()
}

// Run writes queued statuses with the given number of workers until ctx ends.
func (w *StatusWriter) Run(ctx context.Context, workers int) {
	RunWorkers(ctx, w.queue, workers, w.write)
}

// write sends the pending status of key; it asks for a retry only when the
// API server could not be reached or failed (a Forbidden write is final).
func (w *StatusWriter) write(ctx context.Context, key string) bool {
	w.mu.Lock()
	p, ok := w.pending[key]
	w.mu.Unlock()
	if !ok {
		return false
	}
	err := w.patch(ctx, p)
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsConflict(err), apierrors.IsInvalid(err), apierrors.IsForbidden(err):
		if apierrors.IsForbidden(err) {
			w.log.Warn("network-status not written: this node may not write it (not retried)", "pod", key, "err", err)
		} else if err != nil {
			w.log.Info("network-status not written: pod gone or replaced", "pod", key, "err", err)
		}
		w.mu.Lock()
		if w.pending[key] == p {
			delete(w.pending, key)
		}
		w.mu.Unlock()
		return false
	default:
		w.log.Warn("writing network-status, will retry", "pod", key, "err", err)
		return true
	}
}

func (w *StatusWriter) patch(ctx context.Context, p pendingStatus) error {
	body, err := json.Marshal(map[string]interface{}{
		"metadata": map[string]interface{}{
			"uid":         p.uid, // precondition: never annotate a recreated pod
			"annotations": map[string]string{netstatus.Annotation: p.value},
		},
	})
	if err != nil {
		return err
	}
	w.Writes.Add(1)
	_, err = w.client.Resource(podsGVR).Namespace(p.namespace).Patch(ctx, p.name, types.MergePatchType, body, metav1.PatchOptions{})
	return err
}
