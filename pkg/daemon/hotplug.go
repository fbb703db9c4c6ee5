package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/planner"
	"github.com/rewire-cni/rewire/pkg/podresources"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/pkg/store"
)

// Reconciler makes the interfaces of running pods follow their annotations:
// for k8s.v1.cni.cncf.io/networks it plugs new networks, unplugs removed ones
// and swaps the network behind an interface whose selection changed; for
// v1.multus-cni.io/default-network it switches the primary network live
// (switch.go). Work on one pod is serialised with its CNI requests by the
// executor's sandbox lock.
type Reconciler struct {
	d     *Daemon
	cache func(namespace, name string) *kube.Pod
	queue workqueue.TypedRateLimitingInterface[string]

	mu         sync.Mutex
	rejected   map[rejection]rejected // annotation value last rejected (one Event per value)
	reconciled map[string]string      // pod key -> resourceVersion its last finished reconcile read
}

// rejected is an annotation value and why it was rejected.
type rejected struct{ value, reason string }

// rejection keys the rejected annotation values: a pod and an annotation.
type rejection struct{ pod, annotation string }

// NewReconciler returns a reconciler for the daemon's pods; cache reads a pod
// from the informer.
func NewReconciler(d *Daemon, cache func(namespace, name string) *kube.Pod) *Reconciler {
	return &Reconciler{
		d: d, cache: cache, rejected: map[rejection]rejected{}, reconciled: map[string]string{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "hotplug"}),
	}
}

// Watch enqueues pods whose networks annotation changes, and every pod the
// informer lists (a restart reconciles everything once).
func (r *Reconciler) Watch(informer cache.SharedIndexInformer) error {
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) { r.enqueueObj(obj) },
		UpdateFunc: func(oldObj, newObj interface{}) {
			o, ok1 := oldObj.(*metav1.PartialObjectMetadata)
			n, ok2 := newObj.(*metav1.PartialObjectMetadata)
			if ok1 && ok2 && (o.Annotations[selection.NetworksAnnotation] != n.Annotations[selection.NetworksAnnotation] ||
				o.Annotations[selection.DefaultNetworkAnnotation] != n.Annotations[selection.DefaultNetworkAnnotation]) {
				r.enqueueObj(newObj)
			}
		},
		DeleteFunc: func(obj interface{}) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				r.mu.Lock()
				delete(r.rejected, rejection{key, selection.NetworksAnnotation})
				delete(r.rejected, rejection{key, selection.DefaultNetworkAnnotation})
				delete(r.reconciled, key)
				r.mu.Unlock()
			}
		},
	})
	return err
}

func (r *Reconciler) enqueueObj(obj interface{}) {
	if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
		r.queue.Add(key)
	}
}

// Enqueue asks for a reconcile of a pod.
func (r *Reconciler) Enqueue(namespace, name string) { r.queue.Add(namespace + "/" + name) }

// Run reconciles queued pods with workers until ctx ends; a pod whose
// reconcile failed in a way a retry can fix is retried with backoff.
func (r *Reconciler) Run(ctx context.Context, workers int) {
	kube.RunWorkers(ctx, r.queue, workers, func(ctx context.Context, key string) bool {
		ns, name, _ := strings.Cut(key, "/")
		metrics.InFlight.Add(1, "reconcile")
		defer metrics.InFlight.Add(-1, "reconcile")
		if err := r.Reconcile(ctx, ns, name); err != nil {
			r.d.Log.Warn("hot-plug failed, will retry", "pod", key, "err", err)
			return true
		}
		return false
	})
}

// Reconcile brings one pod's attachments in line with its annotations: the
// primary first, then the secondaries. It returns an error only when a retry
// can help.
func (r *Reconciler) Reconcile(ctx context.Context, namespace, name string) error {
	pod := r.cache(namespace, name)
	if pod == nil {
		return nil
	}
	defer r.done(namespace+"/"+name, pod.ResourceVersion)
	cid := r.d.Exec.ByPod(string(pod.UID))
	if cid == "" {
		// A pod Multus networked before the takeover gets its record now.
		var err error
		cid, err = r.d.Exec.AdoptPod(ctx, string(pod.UID), pod.Annotations[netstatus.Annotation])
		if cid == "" {
			return err // no sandbox of this pod on this node (yet)
		}
		if err != nil {
			r.d.Log.Warn("taking over a sandbox of the pod another meta plugin made", "pod", namespace+"/"+name, "err", err)
		}
	}
	defer r.d.Exec.Lock(cid)()
	sb, err := r.d.Exec.Get(cid)
	if err != nil || sb == nil || !sb.Complete || sb.PodUID != string(pod.UID) {
		return err
	}
	ref := podRef{Namespace: namespace, Name: name, UID: pod.UID}
	if err := r.switchPrimary(ctx, ref, pod, sb); err != nil {
		return err
	}
	desired, err := r.desired(ctx, pod, sb)
	var planErr *planner.Error
	if errors.As(err, &planErr) {
		r.reject(ref, pod, selection.NetworksAnnotation, kube.ReasonInterfaceRejected, err)
		return nil
	}
	if err != nil {
		return err
	}
	r.forgetRejection(ref, selection.NetworksAnnotation)
	changed, err := r.apply(ctx, ref, sb, desired)
	if changed {
		r.publish(ref, sb)
	}
	return err
}

// done records the resourceVersion a finished reconcile of a pod read.
func (r *Reconciler) done(key, resourceVersion string) {
	r.mu.Lock()
	r.reconciled[key] = resourceVersion
	r.mu.Unlock()
}

// PodView is a pod as the daemon sees it (GET /debug/pods/NAMESPACE/NAME on
// the socket): the informer cache's copy, and the resourceVersion of the
// copy the last finished reconcile of the pod read. Tests wait on it where
// they would otherwise sleep: "the daemon has seen the edit", "the daemon
// has acted on it".
type PodView struct {
	UID             ktypes.UID        `json:"uid"`
	ResourceVersion string            `json:"resourceVersion"`
	Labels          map[string]string `json:"labels,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	// Reconciled is empty until a reconcile of the pod finished.
	Reconciled string `json:"reconciled,omitempty"`
}

// View returns the daemon's view of a pod; false when its cache lacks it.
func (r *Reconciler) View(namespace, name string) (PodView, bool) {
	pod := r.cache(namespace, name)
	if pod == nil {
		return PodView{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return PodView{UID: pod.UID, ResourceVersion: pod.ResourceVersion, Labels: pod.Labels, Annotations: pod.Annotations,
		Reconciled: r.reconciled[namespace+"/"+name]}, true
}

// desired plans the secondary attachments, keeping recorded devices.
func (r *Reconciler) desired(ctx context.Context, pod *kube.Pod, sb *store.Sandbox) ([]attachment.Spec, error) {
	recorded := sb.Specs()
	specs, err := planner.Secondaries(planner.Input{
		Pod:    planner.Pod{Namespace: pod.Namespace, Name: pod.Name, Annotations: pod.Annotations},
		Config: r.d.Config, IfName: sb.IfName, Lookup: r.d.Networks,
	}, recorded)
	if err != nil {
		return nil, err
	}
	for i := range specs {
		if a := sb.Find(specs[i].IfName); a != nil && a.Network == specs[i].Network && a.DeviceID != "" && specs[i].DeviceID == "" {
			if err := specs[i].SetDeviceID(a.DeviceID); err != nil {
				return nil, err
			}
		}
	}
	if podresources.NeedsDevices(specs) {
		if err := r.d.assignDevices(ctx, pod.Namespace, pod.Name, pod.UID, specs, recorded); err != nil {
			return nil, err
		}
	}
	return specs, nil
}

// apply unplugs what is no longer wanted, then plugs what is missing, in the
// annotation's order. A failed plug of a swapped interface puts the old
// attachment back. It reports whether the record changed.
func (r *Reconciler) apply(ctx context.Context, ref podRef, sb *store.Sandbox, desired []attachment.Spec) (bool, error) {
	want := map[string]attachment.Spec{}
	order := make([]string, len(desired))
	for i, s := range desired {
		want[s.IfName], order[i] = s, s.IfName
	}
	removed := map[string]attachment.Spec{}
	changed := false
	var errs []error
	baseline := false
	for _, a := range sb.Specs() {
		if w := want[a.IfName]; sb.Adopted != "" && !a.Primary && a.Selection == "" && w.Network == a.Network {
			// Adopted from Multus: made from the element that asks for
			// this network under this name now.
			sb.Find(a.IfName).Selection, baseline = w.Selection, true
			continue
		}
		if a.Primary || same(a, want[a.IfName]) || sb.Switch != nil && a.IfName == sb.Switch.From {
			continue // the primary, and the old primary of a draining switch
		}
		err := r.d.Exec.Unplug(ctx, sb, a.IfName)
		metrics.Reconciles.Inc("unplug", result(err))
		if err != nil {
			r.d.event(ref, kube.EventWarning, kube.ReasonInterfaceRemoveFailed, err.Error())
			errs = append(errs, err)
			continue
		}
		changed, removed[a.IfName] = true, a
		r.d.event(ref, kube.EventNormal, kube.ReasonInterfaceRemoved, fmt.Sprintf("Removed %s from %s", a.IfName, a.Network))
	}
	for _, s := range desired {
		if sb.Find(s.IfName) != nil {
			continue
		}
		if err := r.d.prepareDevInfo(&s, sb.ContainerID); err != nil {
			errs = append(errs, err)
			continue
		}
		if msg := cniArgsMessage([]attachment.Spec{s}); msg != "" {
			r.d.event(ref, kube.EventNormal, kube.ReasonCNIArgsFallback, msg)
		}
		res, err := r.d.Exec.Plug(ctx, sb, s)
		metrics.Reconciles.Inc("plug", result(err))
		if err != nil {
			err = fmt.Errorf("network %s (interface %s): %w", s.Network, s.IfName, err)
			r.d.event(ref, kube.EventWarning, kube.ReasonInterfaceAddFailed, err.Error())
			errs = append(errs, err)
			if old, ok := removed[s.IfName]; ok {
				if _, rerr := r.d.Exec.Plug(ctx, sb, old); rerr != nil {
					errs = append(errs, fmt.Errorf("restoring %s: %w", s.IfName, rerr))
				}
			}
			continue
		}
		changed = true
		r.d.event(ref, kube.EventNormal, kube.ReasonInterfaceAdded, fmt.Sprintf("Added %s %v from %s", s.IfName, ipsOf(res), s.Network))
	}
	if changed || baseline {
		errs = append(errs, r.d.Exec.Reorder(sb, order))
	}
	return changed, errors.Join(errs...)
}

// same reports whether a recorded attachment is what is wanted.
func same(recorded, want attachment.Spec) bool {
	return want.IfName != "" && recorded.Network == want.Network && recorded.Selection == want.Selection
}

// publish queues the network-status of the sandbox as recorded.
func (r *Reconciler) publish(ref podRef, sb *store.Sandbox) {
	value, err := recordedStatus(sb)
	if err != nil {
		r.d.Log.Error("stored results unreadable", "containerID", sb.ContainerID, "err", err)
		return
	}
	if r.d.Status != nil {
		r.d.Status.Set(ref.Namespace, ref.Name, ref.UID, value)
	}
	r.d.queueRecordedNetworkData(ref, sb)
}

// reject records one warning Event per rejected value of an annotation.
func (r *Reconciler) reject(ref podRef, pod *kube.Pod, annotation, reason string, err error) {
	key, value := rejection{ref.String(), annotation}, pod.Annotations[annotation]
	r.mu.Lock()
	prev, seen := r.rejected[key]
	seen = seen && prev.value == value
	r.rejected[key] = rejected{value, err.Error()}
	r.mu.Unlock()
	if !seen {
		r.d.Log.Warn("annotation rejected, not retried for this value", "pod", ref, "annotation", annotation, "reason", reason, "err", err)
		r.d.event(ref, kube.EventWarning, reason, err.Error())
	}
}

// Rejected returns why the pod's default-network annotation value was
// refused or failed (the switch is not retried for that value).
func (r *Reconciler) Rejected(namespace, name, value string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rej, ok := r.rejected[rejection{namespace + "/" + name, selection.DefaultNetworkAnnotation}]
	return rej.reason, ok && rej.value == value
}

func (r *Reconciler) forgetRejection(ref podRef, annotation string) {
	r.mu.Lock()
	delete(r.rejected, rejection{ref.String(), annotation})
	r.mu.Unlock()
}

// result is the metrics label of an outcome.
func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func ipsOf(res *current.Result) []string {
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, ip.Address.String())
	}
	return ips
}
