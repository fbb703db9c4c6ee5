package migration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// fakeNode is a node whose pods sit on recorded primaries; Patch records
// the default-network values written, and networks are what exists.
type fakeNode struct {
	pods     []*kube.Pod
	primary  map[types.UID]string
	networks map[string]bool // key -> has the ips capability
	patched  map[string]interface{}
	canOwnOf []string
}

func (f *fakeNode) node() Node {
	return Node{
		Name: "n1", MultusNamespace: "kube-system",
		Pods: func() []*kube.Pod { return f.pods },
		Patch: func(_ context.Context, namespace, name string, ann map[string]interface{}) error {
			if v, ok := ann[selection.DefaultNetworkAnnotation]; ok {
				f.patched[namespace+"/"+name] = v
			}
			return nil
		},
		Primary:    func(uid types.UID) (string, bool) { p, ok := f.primary[uid]; return p, ok },
		ClusterKey: func() string { return "cluster-1" },
		CanOwn: func(network string) (bool, error) {
			f.canOwnOf = append(f.canOwnOf, network)
			ips, ok := f.networks[network]
			if !ok {
				return false, fmt.Errorf("NetworkAttachmentDefinition %s not found", network)
			}
			return ips, nil
		},
		Rejected: func(string, string, string) (string, bool) { return "", false },
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func newFake() *fakeNode {
	f := &fakeNode{primary: map[types.UID]string{}, patched: map[string]interface{}{},
		networks: map[string]bool{"kube-system/ptp": true, "tenant/ptp": true, "cluster-1": true}}
	for _, p := range []struct{ ns, name, primary string }{
		{"tenant", "a", "cluster-1"},  // its namespace holds a NAD named ptp
		{"default", "b", "cluster-1"}, // its namespace holds none
		{"tenant", "c", "tenant/ptp"}, // on the tenant's own ptp
		{"shop", "d", "kube-system/ptp"},
	} {
		uid := types.UID(p.ns + "-" + p.name)
		f.pods = append(f.pods, &kube.Pod{Namespace: p.ns, Name: p.name, UID: uid})
		f.primary[uid] = p.primary
	}
	return f
}

// An unqualified `to` moves every selected pod to the NAD of
// multusNamespace, written with its namespace, and a pod counts as
// switched only once it is there: a tenant's NAD of the same name neither
// receives its pods nor counts as the target.
func TestUnqualifiedToResolvesInMultusNamespace(t *testing.T) {
	f := newFake()
	c := &Controller{node: f.node()}
	m := &Migration{ObjectMeta: metav1.ObjectMeta{Name: "mig"}, Spec: Spec{From: Cluster, To: "ptp", MaxConcurrentPerNode: 10}}
	r := &run{pods: map[types.UID]*podState{}}
	c.stepRun(context.Background(), m, r)
	want := map[string]interface{}{"tenant/a": "kube-system/ptp", "default/b": "kube-system/ptp"}
	if fmt.Sprint(f.patched) != fmt.Sprint(want) {
		t.Fatalf("patched %v, want %v", f.patched, want)
	}
	for _, n := range f.canOwnOf {
		if n != "kube-system/ptp" {
			t.Fatalf("asked whether %s can own the IPs; the target is kube-system/ptp", n)
		}
	}
	// The reconciler put a on the tenant's ptp (it must not), b on the
	// intended one: only b is switched.
	f.primary["tenant-a"], f.primary["default-b"] = "tenant/ptp", "kube-system/ptp"
	c.stepRun(context.Background(), m, r)
	ns := r.nodeStatus()
	if ns.Total != 2 || ns.Switched != 1 || ns.Switching != 1 || r.pods["tenant-a"].phase != switching {
		t.Fatalf("node status %+v; a on tenant/ptp must not count as switched", ns)
	}
	// Pods of this migration on the intended network are reported as
	// being there; the annotation stays qualified.
	f.primary["tenant-a"] = "kube-system/ptp"
	c.stepRun(context.Background(), m, r)
	if ns := r.nodeStatus(); ns.Switched != 2 || ns.Remaining != 0 {
		t.Fatalf("node status %+v, want 2 switched", ns)
	}
}

// An unqualified `from` is the NAD of multusNamespace too: pods on a
// tenant's same-named NAD are not selected; a rollback writes the source
// back with its namespace.
func TestUnqualifiedFromResolvesInMultusNamespace(t *testing.T) {
	f := newFake()
	c := &Controller{node: f.node()}
	m := &Migration{ObjectMeta: metav1.ObjectMeta{Name: "mig"}, Spec: Spec{From: "ptp", To: Cluster, MaxConcurrentPerNode: 10}}
	r := &run{pods: map[types.UID]*podState{}}
	c.stepRun(context.Background(), m, r)
	if len(r.pods) != 1 || r.pods["shop-d"] == nil {
		t.Fatalf("candidates %v, want only shop/d (on kube-system/ptp), not tenant/c (on tenant/ptp)", r.pods)
	}
	if v, ok := f.patched["shop/d"]; !ok || v != nil {
		t.Fatalf("shop/d patched %v, want the annotation removed (cluster)", f.patched)
	}

	f = newFake()
	f.pods[0].Annotations = map[string]string{Annotation: "mig"}
	c = &Controller{node: f.node()}
	m = &Migration{ObjectMeta: metav1.ObjectMeta{Name: "mig"}, Spec: Spec{From: "ptp", To: Cluster, Rollback: true}}
	r = &run{rollback: true, pods: map[types.UID]*podState{}}
	c.stepRun(context.Background(), m, r)
	if f.patched["tenant/a"] != "kube-system/ptp" {
		t.Fatalf("rollback patched %v, want tenant/a back on kube-system/ptp", f.patched)
	}
}

// A target that does not exist in multusNamespace starts nothing: the pods
// stay where they are and pending, and the node says why.
func TestMissingTargetWaits(t *testing.T) {
	f := newFake()
	delete(f.networks, "kube-system/ptp")
	c := &Controller{node: f.node()}
	m := &Migration{ObjectMeta: metav1.ObjectMeta{Name: "mig"}, Spec: Spec{From: Cluster, To: "ptp", MaxConcurrentPerNode: 10, AllowReaddress: true}}
	r := &run{pods: map[types.UID]*podState{}}
	c.stepRun(context.Background(), m, r)
	ns := r.nodeStatus()
	if len(f.patched) != 0 || ns.Remaining != 2 || ns.Skipped != 0 || ns.Failed != 0 {
		t.Fatalf("patched %v, status %+v: want nothing patched, 2 remaining", f.patched, ns)
	}
	if !strings.Contains(ns.Waiting, "kube-system/ptp") || !strings.Contains(ns.Waiting, "multusNamespace kube-system") {
		t.Fatalf("waiting %q does not say which network is missing and why there", ns.Waiting)
	}
	f.networks["kube-system/ptp"] = true // created later: the migration goes on
	c.stepRun(context.Background(), m, r)
	if ns := r.nodeStatus(); ns.Waiting != "" || len(f.patched) != 2 {
		t.Fatalf("after the NAD exists: status %+v, patched %v", ns, f.patched)
	}
}

// A pod created during a newPods: to migration starts on the target with
// its namespace.
func TestNewPodNetworkQualified(t *testing.T) {
	f := newFake()
	c := &Controller{node: f.node(), informer: cache.NewSharedIndexInformer(&cache.ListWatch{}, &unstructured.Unstructured{}, 0, cache.Indexers{})}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&Migration{ObjectMeta: metav1.ObjectMeta{Name: "mig"},
		Spec: Spec{From: Cluster, To: "ptp", NewPods: "to"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.informer.GetStore().Add(&unstructured.Unstructured{Object: obj}); err != nil {
		t.Fatal(err)
	}
	if v, ok := c.NewPodNetwork(&kube.Pod{Namespace: "tenant", Name: "new"}); !ok || v != "kube-system/ptp" {
		t.Fatalf("NewPodNetwork = %q, %v; want kube-system/ptp", v, ok)
	}
}

// A pod being deleted (its sandbox gone, its object still Terminating) is
// neither switched nor counted: a rollback is not held up by it.
func TestTerminatingPodNotCounted(t *testing.T) {
	f := newFake()
	f.pods = f.pods[:1]
	f.pods[0].Annotations = map[string]string{Annotation: "mig"}
	gone := &kube.Pod{Namespace: "tenant", Name: "gone", UID: "tenant-gone", Terminating: true, Annotations: map[string]string{Annotation: "mig"}}
	f.pods = append(f.pods, gone)
	c := &Controller{node: f.node()}
	m := &Migration{ObjectMeta: metav1.ObjectMeta{Name: "mig"}, Spec: Spec{From: Cluster, To: "kube-system/ptp", Rollback: true}}
	r := &run{rollback: true, pods: map[types.UID]*podState{}}
	c.stepRun(context.Background(), m, r)
	if ns := r.nodeStatus(); ns.Total != 1 || ns.Switched != 1 || ns.Remaining != 0 {
		t.Fatalf("status %+v: want the live pod only, back on from", ns)
	}
	if _, ok := f.patched["tenant/gone"]; ok {
		t.Fatal("the terminating pod was patched")
	}
}

// A pod whose switch runs (no recorded primary meanwhile) past
// SwitchTimeout is waited for, not failed and pointed back; one whose
// switch never started is failed.
func TestSwitchTimeoutWaitsForRunningSwitch(t *testing.T) {
	for _, running := range []bool{true, false} {
		f := newFake()
		f.pods = f.pods[:1]
		c := &Controller{node: f.node()}
		m := &Migration{ObjectMeta: metav1.ObjectMeta{Name: "mig"}, Spec: Spec{From: Cluster, To: "kube-system/ptp", MaxConcurrentPerNode: 1}}
		r := &run{pods: map[types.UID]*podState{}}
		c.stepRun(context.Background(), m, r)
		s := r.pods[f.pods[0].UID]
		if s == nil || s.phase != switching {
			t.Fatalf("the pod was not started: %+v", s)
		}
		s.since = time.Now().Add(-2 * SwitchTimeout)
		if running {
			delete(f.primary, f.pods[0].UID)
		}
		delete(f.patched, "tenant/a")
		c.stepRun(context.Background(), m, r)
		if got := s.phase == failed; got == running {
			t.Errorf("switch running %v: phase %d, patched %v", running, s.phase, f.patched)
		}
	}
}

// Two migrations selecting the same pods: the one that marked a pod first
// switches it; the other reports it held (skipped, naming the owner) and
// patches nothing, also after a restart (the mark read from the pod), and
// takes the pod once the owner let it go.
func TestOneMigrationOwnsAPod(t *testing.T) {
	f := newFake()
	f.pods = f.pods[:2] // tenant/a, default/b on the cluster network
	f.networks["kube-system/other"] = true
	first := &Migration{ObjectMeta: metav1.ObjectMeta{Name: "first", UID: "u1"}, Spec: Spec{From: Cluster, To: "kube-system/ptp", MaxConcurrentPerNode: 10}}
	second := &Migration{ObjectMeta: metav1.ObjectMeta{Name: "second", UID: "u2"}, Spec: Spec{From: Cluster, To: "kube-system/other", MaxConcurrentPerNode: 10}}
	c := &Controller{node: f.node(), runs: map[types.UID]*run{},
		informer: cache.NewSharedIndexInformer(&cache.ListWatch{}, &unstructured.Unstructured{}, 0, cache.Indexers{})}
	for _, m := range []*Migration{first, second} {
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.informer.GetStore().Add(&unstructured.Unstructured{Object: obj}); err != nil {
			t.Fatal(err)
		}
	}
	step := func(m *Migration) *run {
		if c.runs[m.UID] == nil {
			c.runs[m.UID] = &run{name: m.Name, pods: map[types.UID]*podState{}}
		}
		c.stepRun(context.Background(), m, c.runs[m.UID])
		return c.runs[m.UID]
	}
	step(first)
	r2 := step(second)
	want := map[string]interface{}{"tenant/a": "kube-system/ptp", "default/b": "kube-system/ptp"}
	if fmt.Sprint(f.patched) != fmt.Sprint(want) {
		t.Fatalf("patched %v, want only the first migration's target %v", f.patched, want)
	}
	ns := r2.nodeStatus()
	if ns.Skipped != 2 || len(ns.SkippedPods) != 2 || !strings.Contains(ns.SkippedPods[0].Reason, "NetworkMigration first") {
		t.Fatalf("second migration's status %+v: want both pods skipped, held by first", ns)
	}

	// A restart: the marks are read from the pods.
	for _, p := range f.pods {
		p.Annotations = map[string]string{Annotation: "first"}
	}
	c.runs = map[types.UID]*run{}
	step(first)
	if ns := step(second).nodeStatus(); ns.Skipped != 2 || fmt.Sprint(f.patched) != fmt.Sprint(want) {
		t.Fatalf("after a restart: status %+v, patched %v", ns, f.patched)
	}

	// The first let tenant/a go (failed: its mark removed, the pod on
	// the cluster network): the second takes it.
	for _, p := range f.pods {
		if p.Name == "a" {
			p.Annotations = nil
		}
	}
	c.runs[first.UID].pods["tenant-a"].phase = failed
	step(second)
	if f.patched["tenant/a"] != "kube-system/other" || f.patched["default/b"] != "kube-system/ptp" {
		t.Fatalf("patched %v: want tenant/a to the second's target, default/b left to the first", f.patched)
	}
}
