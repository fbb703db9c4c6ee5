package kube

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Event types and the reasons Rewire records on pods.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"

	ReasonAddedInterface = "AddedInterface"
	ReasonAddFailed      = "NetworkAddFailed"
	ReasonDelIncomplete  = "NetworkDeleteIncomplete"
	// ReasonCNIArgsFallback: an ips or mac request reaches the plugins only
	// as IP= or MAC= in CNI_ARGS (no plugin declares the capability).
	ReasonCNIArgsFallback = "CapabilityInCNIArgs"

	// Hot-plug (the networks annotation of a running pod): the reasons of
	// Multus's dynamic-networks controller, which alerts key on.
	ReasonInterfaceAdded        = "AddedInterface"
	ReasonInterfaceRemoved      = "RemovedInterface"
	ReasonInterfaceAddFailed    = "FailedAddingInterface"
	ReasonInterfaceRemoveFailed = "FailedRemovingInterface"
	ReasonInterfaceRejected     = "InterfaceAddRejected"

	// Live switch (the default-network annotation of a running pod).
	ReasonNetworkSwitched = "NetworkSwitched"
	ReasonSwitchRejected  = "SwitchRejected"
	ReasonSwitchFailed    = "SwitchFailed"
	ReasonSwitchDraining  = "SwitchDraining"

	// Self-GC (pkg/selfgc): a sandbox the runtime no longer has, whose
	// CNI DEL never came, released (or not) by rewired itself.
	ReasonStaleReleased      = "StaleSandboxReleased"
	ReasonStaleReleaseFailed = "StaleSandboxReleaseFailed"
)

var eventsGVR = schema.GroupVersionResource{Version: "v1", Resource: "events"}

// eventQueue bounds the Events waiting for the API server; beyond it new
// Events are dropped (and logged) rather than growing without bound during
// an outage.
const eventQueue = 1024

// Events records core/v1 Events on pods from one background worker, off the
// CNI path. It writes them through the dynamic client: client-go's typed
// clientset and recorder would double the daemon's memory.
type Events struct {
	client dynamic.Interface
	node   string
	log    *slog.Logger
	queue  chan *unstructured.Unstructured
}

// NewEvents returns an event writer for component "rewire" on node.
func NewEvents(client dynamic.Interface, node string, log *slog.Logger) *Events {
	return &Events{client: client, node: node, log: log, queue: make(chan *unstructured.Unstructured, eventQueue)}
}

// Pod queues an Event on a pod.
func (e *Events) Pod(namespace, name string, uid types.UID, eventType, reason, msg string) {
	now := time.Now().UTC().Format(time.RFC3339)
	ev := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "v1", "kind": "Event",
		"metadata": map[string]interface{}{
			"name": fmt.Sprintf("%s.%x", name, time.Now().UnixNano()), "namespace": namespace,
		},
		"involvedObject": map[string]interface{}{
			"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name, "uid": string(uid),
		},
		"type": eventType, "reason": reason, "message": msg, "count": int64(1),
		"firstTimestamp": now, "lastTimestamp": now,
		"source":             map[string]interface{}{"component": "rewire", "host": e.node},
		"reportingComponent": "rewire", "reportingInstance": e.node,
	}}
	select {
	case e.queue <- ev:
	default:
		e.log.Warn("event queue full, dropping event", "pod", namespace+"/"+name, "reason", reason, "message", msg)
	}
}

// Run writes queued Events until ctx ends, retrying each for a while when
// the API server is unreachable.
func (e *Events) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-e.queue:
			e.write(ctx, ev)
		}
	}
}

func (e *Events) write(ctx context.Context, ev *unstructured.Unstructured) {
	delay := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		_, err := e.client.Resource(eventsGVR).Namespace(ev.GetNamespace()).Create(ctx, ev, metav1.CreateOptions{})
		if err == nil || attempt == 8 || ctx.Err() != nil {
			if err != nil {
				e.log.Warn("event not written", "event", ev.GetName(), "err", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
