package dra

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
)

// fakeClaims is the claim cache.
type fakeClaims struct {
	mu     sync.Mutex
	claims map[string]*Claim
}

func (f *fakeClaims) Claim(namespace, name string) (*Claim, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.claims[namespace+"/"+name]
	return c, ok
}

func (f *fakeClaims) set(c *Claim) {
	f.mu.Lock()
	f.claims[c.Namespace+"/"+c.Name] = c
	f.mu.Unlock()
}

// applied is one apply the fake API server got.
type applied struct {
	subresource, manager string
	force                bool
	body                 map[string]interface{}
}

// writerEnv is a StatusWriter on a fake dynamic client that records every
// apply and answers with fail (nil: success).
func writerEnv(t *testing.T) (*StatusWriter, *fakeClaims, *[]applied, *error) {
	t.Helper()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{ClaimsGVR: "ResourceClaimList"})
	var calls []applied
	var fail error
	client.PrependReactor("patch", "resourceclaims", func(a clienttesting.Action) (bool, runtime.Object, error) {
		p := a.(clienttesting.PatchActionImpl)
		if p.GetPatchType() != types.ApplyPatchType {
			t.Errorf("patch type %s, want apply", p.GetPatchType())
		}
		var body map[string]interface{}
		if err := json.Unmarshal(p.GetPatch(), &body); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, applied{subresource: p.GetSubresource(), manager: p.PatchOptions.FieldManager,
			force: p.PatchOptions.Force != nil && *p.PatchOptions.Force, body: body})
		if fail != nil {
			return true, nil, fail
		}
		return true, unstructuredOf(t, `{"apiVersion":"resource.k8s.io/v1","kind":"ResourceClaim","metadata":{"name":"x"}}`), nil
	})
	cache := &fakeClaims{claims: map[string]*Claim{}}
	return NewStatusWriter(client, cache, slog.New(slog.NewTextHandler(io.Discard, nil))), cache, &calls, &fail
}

var nicClaim = ClaimRef{Namespace: "ns", Name: "nic", UID: "u1"}

func entry(device, ifName, ip string) Entry {
	return Entry{Claim: nicClaim, Key: DeviceKey{Driver: "nic.example.com", Pool: "node-1", Device: device},
		Data: NetworkData{InterfaceName: ifName, IPs: []string{ip}, HardwareAddress: "aa:bb:cc:dd:ee:01"}}
}

// statusOf is the claim as the cache would have it after the applies.
func statusOf(entries ...Entry) *Claim {
	c := &Claim{ObjectMeta: metav1.ObjectMeta{Namespace: nicClaim.Namespace, Name: nicClaim.Name, UID: nicClaim.UID}}
	for _, e := range entries {
		nd := e.Data
		c.Status.Devices = append(c.Status.Devices, DeviceStatus{Driver: e.Key.Driver, Pool: e.Key.Pool, Device: e.Key.Device, NetworkData: &nd})
	}
	return c
}

// devicesOf returns the device names of an apply body's status.devices.
func devicesOf(t *testing.T, a applied) []string {
	t.Helper()
	st, _ := a.body["status"].(map[string]interface{})
	list, _ := st["devices"].([]interface{})
	names := []string{}
	for _, d := range list {
		names = append(names, d.(map[string]interface{})["device"].(string))
	}
	return names
}

func TestStatusWriterApplies(t *testing.T) {
	w, cache, calls, _ := writerEnv(t)
	ctx := context.Background()
	cache.set(statusOf())
	w.Set("ns/p1", []Entry{entry("vf1", "net2", "10.0.0.6/24"), entry("vf0", "net1", "10.0.0.5/24")})
	if retry := w.write(ctx, "ns/nic"); retry {
		t.Fatal("retry after a successful apply")
	}
	if len(*calls) != 1 {
		t.Fatalf("%d applies, want 1", len(*calls))
	}
	a := (*calls)[0]
	if a.subresource != "status" || a.manager != FieldManager || a.force {
		t.Errorf("apply to %q as %q (force %v), want status as %q, not forced", a.subresource, a.manager, a.force, FieldManager)
	}
	want := map[string]interface{}{
		"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
		"metadata": map[string]interface{}{"name": "nic", "namespace": "ns", "uid": "u1"},
		"status": map[string]interface{}{"devices": []interface{}{
			map[string]interface{}{"driver": "nic.example.com", "pool": "node-1", "device": "vf0", "networkData": map[string]interface{}{
				"interfaceName": "net1", "ips": []interface{}{"10.0.0.5/24"}, "hardwareAddress": "aa:bb:cc:dd:ee:01"}},
			map[string]interface{}{"driver": "nic.example.com", "pool": "node-1", "device": "vf1", "networkData": map[string]interface{}{
				"interfaceName": "net2", "ips": []interface{}{"10.0.0.6/24"}, "hardwareAddress": "aa:bb:cc:dd:ee:01"}},
		}},
	}
	if !reflect.DeepEqual(a.body, want) {
		t.Errorf("apply body:\n got %v\nwant %v", a.body, want)
	}

	// The cache catches up: the same entries again are not written.
	cache.set(statusOf(entry("vf0", "net1", "10.0.0.5/24"), entry("vf1", "net2", "10.0.0.6/24")))
	w.Set("ns/p1", []Entry{entry("vf1", "net2", "10.0.0.6/24"), entry("vf0", "net1", "10.0.0.5/24")})
	w.write(ctx, "ns/nic")
	if len(*calls) != 1 {
		t.Errorf("an up-to-date claim was written again")
	}

	// Another pod sharing the claim: its entry joins the first pod's.
	w.Set("ns/p2", []Entry{entry("vf2", "net1", "10.0.0.7/24")})
	w.write(ctx, "ns/nic")
	if got := devicesOf(t, (*calls)[len(*calls)-1]); !reflect.DeepEqual(got, []string{"vf0", "vf1", "vf2"}) {
		t.Errorf("apply of a shared claim has devices %v, want every pod's", got)
	}
	cache.set(statusOf(entry("vf0", "net1", "10.0.0.5/24"), entry("vf1", "net2", "10.0.0.6/24"), entry("vf2", "net1", "10.0.0.7/24")))

	// The first pod's vf1 interface is unplugged: its entry goes.
	w.Set("ns/p1", []Entry{entry("vf0", "net1", "10.0.0.5/24")})
	w.write(ctx, "ns/nic")
	if got := devicesOf(t, (*calls)[len(*calls)-1]); !reflect.DeepEqual(got, []string{"vf0", "vf2"}) {
		t.Errorf("apply after an unplug has devices %v, want vf0 and vf2", got)
	}

	// A DEL forgets a pod without a write.
	n := len(*calls)
	w.Forget("ns/p2")
	w.Forget("ns/p1")
	if w.write(ctx, "ns/nic"); len(*calls) != n {
		t.Errorf("Forget wrote the claim")
	}
}

func TestStatusWriterErrors(t *testing.T) {
	gr := schema.GroupResource{Group: Group, Resource: "resourceclaims"}
	tests := []struct {
		name      string
		err       error
		wantRetry bool
	}{
		{"server error", apierrors.NewInternalError(errors.New("boom")), true},
		{"unreachable", errors.New("connection refused"), true},
		{"claim gone", apierrors.NewNotFound(gr, "nic"), false},
		{"a driver owns the field", apierrors.NewConflict(gr, "nic", errors.New("conflict with manager driver")), false},
		{"not this node's claim", apierrors.NewForbidden(gr, "nic", errors.New("associated-node")), false},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: Group, Kind: "ResourceClaim"}, "nic", nil), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, cache, calls, fail := writerEnv(t)
			cache.set(statusOf())
			*fail = tc.err
			w.Set("ns/p1", []Entry{entry("vf0", "net1", "10.0.0.5/24")})
			if retry := w.write(context.Background(), "ns/nic"); retry != tc.wantRetry || len(*calls) != 1 {
				t.Errorf("retry = %v after %d applies, want %v after 1", retry, len(*calls), tc.wantRetry)
			}
		})
	}
}

func TestStatusWriterSkipsGoneClaims(t *testing.T) {
	tests := []struct {
		name   string
		cached *Claim
	}{
		{"not cached", nil},
		{"replaced (another UID)", &Claim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "nic", UID: "u2"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, cache, calls, _ := writerEnv(t)
			if tc.cached != nil {
				cache.set(tc.cached)
			}
			w.Set("ns/p1", []Entry{entry("vf0", "net1", "10.0.0.5/24")})
			if retry := w.write(context.Background(), "ns/nic"); retry || len(*calls) != 0 {
				t.Errorf("retry %v, %d applies; want none", retry, len(*calls))
			}
			if _, _, _, ok := w.snapshot("ns/nic"); ok {
				t.Error("the gone claim is still tracked")
			}
		})
	}
}

func TestUpToDate(t *testing.T) {
	e0, e1 := entry("vf0", "net1", "10.0.0.5/24"), entry("vf1", "net2", "10.0.0.6/24")
	changed := entry("vf0", "net1", "10.0.0.9/24")
	tests := []struct {
		name    string
		cached  *Claim
		entries []Entry
		applied map[DeviceKey]bool
		want    bool
	}{
		{"nothing wanted, nothing there", statusOf(), nil, nil, true},
		{"all there", statusOf(e0, e1), []Entry{e0, e1}, nil, true},
		{"one missing", statusOf(e0), []Entry{e0, e1}, nil, false},
		{"one different", statusOf(changed), []Entry{e0}, nil, false},
		{"an applied entry dropped since, still there", statusOf(e0, e1), []Entry{e0}, map[DeviceKey]bool{e0.Key: true, e1.Key: true}, false},
		{"an applied entry dropped since, gone", statusOf(e0), []Entry{e0}, map[DeviceKey]bool{e0.Key: true, e1.Key: true}, true},
		{"another's networkData is not ours to remove", statusOf(e0, e1), []Entry{e0}, map[DeviceKey]bool{e0.Key: true}, true},
	}
	for _, tc := range tests {
		if got := upToDate(tc.cached, tc.entries, tc.applied); got != tc.want {
			t.Errorf("%s: upToDate = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A pod whose last claim-backed interface is unplugged gets its entry
// removed by an apply without it; the claim is then no longer tracked.
func TestStatusWriterRemovesUnplugged(t *testing.T) {
	w, cache, calls, _ := writerEnv(t)
	ctx := context.Background()
	e0 := entry("vf0", "net1", "10.0.0.5/24")
	cache.set(statusOf())
	w.Set("ns/p1", []Entry{e0})
	w.write(ctx, "ns/nic")
	cache.set(statusOf(e0))
	w.Set("ns/p1", nil)
	w.write(ctx, "ns/nic")
	if len(*calls) != 2 {
		t.Fatalf("%d applies, want 2", len(*calls))
	}
	if got := devicesOf(t, (*calls)[1]); len(got) != 0 {
		t.Errorf("apply after the unplug has devices %v, want none", got)
	}
	if _, _, _, ok := w.snapshot("ns/nic"); ok {
		t.Error("the claim is still tracked")
	}
}
