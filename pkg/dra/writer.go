package dra

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/workqueue"

	"github.com/rewire-cni/rewire/pkg/kube"
)

// FieldManager is the server-side apply field manager of networkData.
const FieldManager = "rewired"

// Entry is the networkData of one allocated device, as an attachment of a
// pod made its interface.
type Entry struct {
	Claim ClaimRef
	Key   DeviceKey
	Data  NetworkData
}

// Claims returns cached claims.
type Claims interface {
	Claim(namespace, name string) (*Claim, bool)
}

// StatusWriter writes networkData into claims' status.devices off the CNI
// path, as StatusWriter of package kube writes network-status: Set queues
// the entries of a pod and returns at once; workers apply them (server-side
// apply of the status subresource as field manager "rewired", with every
// entry this node has for the claim, guarded by the claim's UID) and retry
// with backoff while the API server is unreachable. A claim whose cached
// status already holds the entries is not written. An entry whose
// networkData another field manager owns (a driver writing its own) is left
// to it: the apply is not forced.
type StatusWriter struct {
	client dynamic.Interface
	cache  Claims
	log    *slog.Logger
	queue  workqueue.TypedRateLimitingInterface[string]

	mu     sync.Mutex
	claims map[string]*claimState
	// Writes counts apply requests sent.
	Writes atomic.Int64
}

// claimState is what this node wants in one claim's status.devices.
type claimState struct {
	ref     ClaimRef
	entries map[DeviceKey]owned
	// applied are the keys of the last apply that succeeded: an entry
	// dropped since then is removed by the next apply.
	applied map[DeviceKey]bool
}

// owned is an entry with the pod (namespace/name) whose attachment made it.
type owned struct {
	pod  string
	data NetworkData
}

// NewStatusWriter returns a writer applying through client and comparing
// with the claims of cache.
func NewStatusWriter(client dynamic.Interface, cache Claims, log *slog.Logger) *StatusWriter {
	return &StatusWriter{
		client: client, cache: cache, log: log, claims: map[string]*claimState{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "claim-network-data"}),
	}
}

// Set replaces the entries of a pod (namespace/name) and queues the claims
// they change.
func (w *StatusWriter) Set(pod string, entries []Entry) {
	w.mu.Lock()
	touched := w.drop(pod, false)
	for _, e := range entries {
		key := e.Claim.String()
		st := w.claims[key]
		if st == nil || st.ref.UID != e.Claim.UID {
			st = &claimState{ref: e.Claim, entries: map[DeviceKey]owned{}, applied: map[DeviceKey]bool{}}
			w.claims[key] = st
		}
		st.entries[e.Key] = owned{pod: pod, data: e.Data}
		touched[key] = true
	}
	w.mu.Unlock()
	for key := range touched {
		w.queue.Add(key)
	}
}

// Forget drops the entries of a pod whose sandbox is gone, without a write:
// the claim's networkData stays until the claim is deallocated or deleted
// (or another pod's entries of a shared claim are applied).
func (w *StatusWriter) Forget(pod string) {
	w.mu.Lock()
	w.drop(pod, true)
	w.mu.Unlock()
}

// drop removes the pod's entries (w.mu held) and returns the claims that
// had some. A claim left without entries is forgotten when forget is set or
// nothing of it was applied; else the next apply removes what was.
func (w *StatusWriter) drop(pod string, forget bool) map[string]bool {
	touched := map[string]bool{}
	for key, st := range w.claims {
		for k, o := range st.entries {
			if o.pod == pod {
				delete(st.entries, k)
				touched[key] = true
			}
		}
		if len(st.entries) == 0 && (forget || len(st.applied) == 0) {
			delete(w.claims, key)
		}
	}
	return touched
}

// Run writes queued claims with the given number of workers until ctx ends.
func (w *StatusWriter) Run(ctx context.Context, workers int) {
	kube.RunWorkers(ctx, w.queue, workers, w.write)
}

// write applies the entries of one claim; it asks for a retry only when the
// API server could not be reached or failed.
func (w *StatusWriter) write(ctx context.Context, key string) bool {
	ref, entries, applied, ok := w.snapshot(key)
	if !ok {
		return false
	}
	cached, found := w.cache.Claim(ref.Namespace, ref.Name)
	if !found || cached.UID != ref.UID {
		w.forgetClaim(key, ref)
		return false
	}
	if upToDate(cached, entries, applied) {
		w.applied(key, ref, entries)
		return false
	}
	w.Writes.Add(1)
	_, err := w.client.Resource(ClaimsGVR).Namespace(ref.Namespace).ApplyStatus(ctx, ref.Name, applyObject(ref, entries),
		metav1.ApplyOptions{FieldManager: FieldManager})
	switch {
	case err == nil:
		w.applied(key, ref, entries)
		return false
	case apierrors.IsNotFound(err), apierrors.IsConflict(err), apierrors.IsInvalid(err), apierrors.IsForbidden(err):
		w.log.Warn("networkData not written into the ResourceClaim", "claim", key, "err", err)
		return false
	default:
		w.log.Warn("writing networkData into the ResourceClaim, will retry", "claim", key, "err", err)
		return true
	}
}

// snapshot copies what to apply for a claim, entries sorted by key.
func (w *StatusWriter) snapshot(key string) (ClaimRef, []Entry, map[DeviceKey]bool, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.claims[key]
	if st == nil {
		return ClaimRef{}, nil, nil, false
	}
	entries := make([]Entry, 0, len(st.entries))
	for k, o := range st.entries {
		entries = append(entries, Entry{Claim: st.ref, Key: k, Data: o.data})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key.less(entries[j].Key) })
	applied := make(map[DeviceKey]bool, len(st.applied))
	for k := range st.applied {
		applied[k] = true
	}
	return st.ref, entries, applied, true
}

// applied records a successful apply of entries (or a status found to hold
// them already).
func (w *StatusWriter) applied(key string, ref ClaimRef, entries []Entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.claims[key]
	if st == nil || st.ref.UID != ref.UID {
		return
	}
	st.applied = make(map[DeviceKey]bool, len(entries))
	for _, e := range entries {
		st.applied[e.Key] = true
	}
	if len(st.entries) == 0 && len(st.applied) == 0 {
		delete(w.claims, key)
	}
}

// forgetClaim drops a claim that is gone or was replaced.
func (w *StatusWriter) forgetClaim(key string, ref ClaimRef) {
	w.mu.Lock()
	if st := w.claims[key]; st != nil && st.ref.UID == ref.UID {
		delete(w.claims, key)
	}
	w.mu.Unlock()
}

// upToDate reports whether the cached claim holds every entry's networkData
// and none of an entry applied before and dropped since.
func upToDate(c *Claim, entries []Entry, applied map[DeviceKey]bool) bool {
	have := map[DeviceKey]*NetworkData{}
	for _, d := range c.Status.Devices {
		have[d.Key()] = d.NetworkData
	}
	want := map[DeviceKey]bool{}
	for _, e := range entries {
		want[e.Key] = true
		if !have[e.Key].Equal(&e.Data) {
			return false
		}
	}
	for k := range applied {
		if !want[k] && have[k] != nil {
			return false
		}
	}
	return true
}

// applyObject is the server-side apply body: the claim's status.devices
// entries of this node, with its UID as a precondition.
func applyObject(ref ClaimRef, entries []Entry) *unstructured.Unstructured {
	devices := make([]interface{}, 0, len(entries))
	for _, e := range entries {
		d := map[string]interface{}{"driver": e.Key.Driver, "pool": e.Key.Pool, "device": e.Key.Device,
			"networkData": networkDataObject(e.Data)}
		if e.Key.ShareID != "" {
			d["shareID"] = e.Key.ShareID
		}
		devices = append(devices, d)
	}
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": Group + "/" + Version, "kind": "ResourceClaim",
		"metadata": map[string]interface{}{"name": ref.Name, "namespace": ref.Namespace, "uid": string(ref.UID)},
		"status":   map[string]interface{}{"devices": devices},
	}}
}

func networkDataObject(n NetworkData) map[string]interface{} {
	out := map[string]interface{}{}
	if n.InterfaceName != "" {
		out["interfaceName"] = n.InterfaceName
	}
	if n.HardwareAddress != "" {
		out["hardwareAddress"] = n.HardwareAddress
	}
	if len(n.IPs) > 0 {
		ips := make([]interface{}, len(n.IPs))
		for i, ip := range n.IPs {
			ips[i] = ip
		}
		out["ips"] = ips
	}
	return out
}

// less orders keys for a stable apply body.
func (k DeviceKey) less(o DeviceKey) bool {
	return strings.Join([]string{k.Driver, k.Pool, k.Device, k.ShareID}, "\x00") <
		strings.Join([]string{o.Driver, o.Pool, o.Device, o.ShareID}, "\x00")
}
