package kube

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Event reasons Rewire records on pods.
const (
	ReasonAddedInterface = "AddedInterface"
	ReasonAddFailed      = "NetworkAddFailed"
	ReasonDelIncomplete  = "NetworkDeleteIncomplete"
)

// Events records Kubernetes Events on pods asynchronously (client-go's
// broadcaster batches, rate limits and retries them off the CNI path).
type Events struct {
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
}

// NewEvents returns an event recorder for component "rewire" on nodeName.
func NewEvents(client corev1client.EventsGetter, nodeName string) *Events {
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: client.Events("")})
	return &Events{
		broadcaster: b,
		recorder:    b.NewRecorder(scheme, corev1.EventSource{Component: "rewire", Host: nodeName}),
	}
}

// Pod records an event on a pod.
func (e *Events) Pod(namespace, name string, uid types.UID, eventType, reason, msg string) {
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: namespace, Name: name, UID: uid}
	e.recorder.Event(ref, eventType, reason, msg)
}

// Shutdown flushes and stops the broadcaster.
func (e *Events) Shutdown() { e.broadcaster.Shutdown() }
