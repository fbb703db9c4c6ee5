package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/daemon"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// setNetworks patches the pod's networks annotation ("" removes it).
func setNetworks(t testing.TB, p *harness.Pod, value string) {
	t.Helper()
	setAnnotation(t, p, selection.NetworksAnnotation, value)
}

// setAnnotation merge-patches one annotation of the pod ("" removes it).
func setAnnotation(t testing.TB, p *harness.Pod, key, value string) {
	t.Helper()
	patchAnnotation(t, p, key, value)
}

// patchAnnotation is setAnnotation returning the pod's resourceVersion
// after the patch (for waitReconciled).
func patchAnnotation(t testing.TB, p *harness.Pod, key, value string) string {
	t.Helper()
	var v interface{} = value
	if value == "" {
		v = nil
	}
	body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{
		"annotations": map[string]interface{}{key: v}}})
	pod, err := api.Client.CoreV1().Pods(p.Namespace).Patch(context.Background(), p.Name, types.MergePatchType, body, metav1.PatchOptions{})
	must(t, err)
	return pod.ResourceVersion
}

// waitView polls the env's daemon's view of the pod (its pod cache, see
// daemon.PodView) until cond holds: where a test needs the daemon to have
// seen an edit, it waits for that instead of sleeping.
func (e *env) waitView(t testing.TB, p *harness.Pod, what string, cond func(daemon.PodView) bool) daemon.PodView {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var v daemon.PodView
	for time.Now().Before(deadline) {
		var ok bool
		var err error
		if v, ok, err = e.daemon.PodView(p.Namespace, p.Name); err == nil && ok && cond(v) {
			return v
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the daemon's view of pod %s/%s never had %s: %+v", p.Namespace, p.Name, what, v)
	return v
}

// waitReconciled waits until the daemon has finished a reconcile of the
// pod that read resourceVersion rv or a later one: what the edit that made
// rv asked for has been done (or refused).
func (e *env) waitReconciled(t testing.TB, p *harness.Pod, rv string) {
	t.Helper()
	e.waitView(t, p, "a finished reconcile of version "+rv, func(v daemon.PodView) bool { return notOlder(v.Reconciled, rv) })
}

// notOlder compares resourceVersions. They are opaque to API clients but
// etcd revisions here, which only grow: a test may order them.
func notOlder(have, want string) bool {
	h, err1 := strconv.ParseUint(have, 10, 64)
	w, err2 := strconv.ParseUint(want, 10, 64)
	return err1 == nil && err2 == nil && h >= w
}

// waitMetric waits until a series of the env's daemon's metrics has value v.
func waitMetric(t testing.TB, e *env, series string, v float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for e.metric(t, series) != v {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's %s never was %v", series, v)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// plugsOK is the daemon's counter of successful plugs.
const plugsOK = `rewire_reconciles_total{operation="plug",result="ok"}`

// metric reads one series of the env's daemon's metrics.
func (e *env) metric(t testing.TB, series string) float64 {
	t.Helper()
	v, err := e.daemon.Metric(series)
	must(t, err)
	return v
}

// waitLinks polls the pod netns until cond holds.
func waitLinks(t testing.TB, p *harness.Pod, what string, cond func(map[string]harness.Link) bool) map[string]harness.Link {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var links map[string]harness.Link
	for time.Now().Before(deadline) {
		var err error
		if links, err = harness.Links(p.NetNS); err == nil && cond(links) {
			return links
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pod never got %s; interfaces: %+v", what, links)
	return nil
}

func hasAddrIn(prefix string) func(harness.Link) bool {
	return func(l harness.Link) bool { return len(l.Addrs) == 1 && strings.HasPrefix(l.Addrs[0], prefix) }
}

// statusNames returns "name@interface" of the pod's network-status once it
// has n entries.
func statusNames(t testing.TB, p *harness.Pod, n int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = got[:0]
		st := networkStatus(t, p)
		for _, s := range st {
			got = append(got, s.Name+"@"+s.Interface)
		}
		if len(st) == n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.Join(got, " ")
}

func TestHotplugAddRemoveSwap(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv-a", e.macvlanConf("mv-a", "192.168.21"), nil)
	e.createNAD("default", "mv-b", e.macvlanConf("mv-b", "192.168.22"), nil)
	p := e.newPod("default", "hot", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	cluster := fmt.Sprintf("cluster-%d@eth0", e.n)

	setNetworks(t, p, "mv-a")
	waitLinks(t, p, "net1 on mv-a", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.21.")(l["net1"]) })
	if got := statusNames(t, p, 2); got != cluster+" default/mv-a@net1" {
		t.Errorf("network-status = %s", got)
	}
	waitEvent(t, p, "AddedInterface")

	setNetworks(t, p, "mv-a,mv-b")
	waitLinks(t, p, "net2 on mv-b", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.22.")(l["net2"]) })

	setNetworks(t, p, "mv-b") // mv-b keeps net2
	links := waitLinks(t, p, "net1 removed", func(l map[string]harness.Link) bool { _, ok := l["net1"]; return !ok })
	if !hasAddrIn("192.168.22.")(links["net2"]) {
		t.Errorf("net2 changed while net1 was removed: %+v", links)
	}
	waitEvent(t, p, "RemovedInterface")
	if got := statusNames(t, p, 2); got != cluster+" default/mv-b@net2" {
		t.Errorf("network-status = %s", got)
	}

	setNetworks(t, p, "mv-a@net2") // swap the network behind net2
	waitLinks(t, p, "net2 on mv-a", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.21.")(l["net2"]) && len(l) == 2 })

	setNetworks(t, p, "[{") // garbage: rejected, nothing changes
	waitEvent(t, p, "InterfaceAddRejected")
	if links, _ := podLinks(t, p); !hasAddrIn("192.168.21.")(links["net2"]) || len(links) != 2 {
		t.Errorf("a rejected annotation changed the pod: %+v", links)
	}
	// Back to a valid annotation: net2 (mv-a) goes, mv-b gets the lowest free name.
	setNetworks(t, p, "mv-b")
	waitLinks(t, p, "net1 on mv-b", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.22.")(l["net1"]) && len(l) == 2 })

	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// Changing the ips of an element re-plugs its interface with the new address.
func TestHotplugChangeIPs(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "static-net", `{"cniVersion":"1.0.0","name":"static-net","plugins":[
		{"type":"macvlan","master":"`+e.master+`","mode":"bridge","capabilities":{"ips":true},"ipam":{"type":"static"}}]}`, nil)
	p := e.newPod("default", "ips", map[string]string{selection.NetworksAnnotation: `[{"name":"static-net","interface":"s0","ips":["10.77.0.5/24"]}]`})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	setNetworks(t, p, `[{"name":"static-net","interface":"s0","ips":["10.77.0.6/24"]}]`)
	waitLinks(t, p, "s0 with 10.77.0.6", func(l map[string]harness.Link) bool {
		return len(l["s0"].Addrs) == 1 && l["s0"].Addrs[0] == "10.77.0.6/24"
	})
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// Unplug uses the config recorded at plug time: it works after the NAD is gone.
func TestHotplugUnplugAfterNADDeleted(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "gone", e.macvlanConf("gone", "192.168.23"), nil)
	p := e.newPod("default", "unplug-gone", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	setNetworks(t, p, "gone")
	waitLinks(t, p, "net1", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.23.")(l["net1"]) })
	must(t, api.Dynamic.Resource(nad.GVR).Namespace("default").Delete(ctx, "gone", metav1.DeleteOptions{}))
	setNetworks(t, p, "")
	waitLinks(t, p, "net1 removed", func(l map[string]harness.Link) bool { return len(l) == 1 })
	if n := len(e.allocations()); n != 1 {
		t.Errorf("want only eth0's IP allocated after the unplug, have %d: %v", n, e.allocations())
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// Namespace isolation holds for hot-plug: nothing is created.
func TestHotplugForbiddenNamespace(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "namespaceIsolation: true\n"})
	e.createNAD("other", "theirs", e.macvlanConf("theirs", "192.168.24"), nil)
	p := e.newPod("isolated", "hot-forbidden", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	setNetworks(t, p, "other/theirs")
	if msg := waitEvent(t, p, "InterfaceAddRejected"); !strings.Contains(msg, "namespace isolation") {
		t.Errorf("event = %q", msg)
	}
	if links, _ := podLinks(t, p); len(links) != 1 {
		t.Errorf("interfaces = %v", keys(links))
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// An annotation edited while the daemon is down is applied when it is back.
func TestHotplugAfterDaemonRestart(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "later", e.macvlanConf("later", "192.168.25"), nil)
	p := e.newPod("default", "restart", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	e.daemon.Kill()
	setNetworks(t, p, "later")
	must(t, e.daemon.Start())
	waitLinks(t, p, "net1 after restart", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.25.")(l["net1"]) })
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// The pod's sandbox deleted while a plug is in flight, an edit arriving
// while a DEL is in flight, and the orders without overlap (the edit seen
// after the DEL, the plug done before it): whatever order the daemon sees
// them in, nothing leaks. Each forced order is checked to have happened
// (net1 in the netns, the daemon's plug counter and in-flight gauges); the
// unforced ones, a DEL right behind the edit, are counted and logged. The
// leak check waits until the daemon has finished the reconcile of every
// edit.
func TestHotplugRacingDel(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	// The first DEL of an eth0 holds the pod's sandbox lock for 2 s before
	// it deletes it, and the first plug of a net1 once its delegate has
	// made the interface.
	e.daemon.ExtraArgs = []string{"--test-faults", "del:before:eth0=delay:2s,add:after:net1=delay:2s"}
	must(t, e.daemon.Start())
	e.createNAD("default", "racy", e.macvlanConf("racy", "192.168.26"), nil)
	ctx := context.Background()
	pod := func(name string) *harness.Pod {
		p := e.newPod("default", name, nil)
		_, err := e.rt.Add(ctx, p)
		must(t, err)
		return p
	}
	net1 := func(l map[string]harness.Link) bool { return hasAddrIn("192.168.26.")(l["net1"]) }
	const delsInFlight = `rewire_inflight_operations{operation="DEL"}`
	const reconcilesInFlight = `rewire_inflight_operations{operation="reconcile"}`

	// The edit arrives while the DEL holds the sandbox: its reconcile runs
	// while the DEL does and plugs nothing.
	p := pod("race-del")
	plugs := e.metric(t, plugsOK)
	deleted := make(chan error, 1)
	go func() { deleted <- e.rt.Del(ctx, p) }()
	waitMetric(t, e, delsInFlight, 1)
	rv := patchAnnotation(t, p, selection.NetworksAnnotation, "racy")
	overlapped := false
	for deadline := time.Now().Add(15 * time.Second); !overlapped && time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		v, _, err := e.daemon.PodView(p.Namespace, p.Name)
		must(t, err)
		running := e.metric(t, reconcilesInFlight) > 0 || notOlder(v.Reconciled, rv)
		if e.metric(t, delsInFlight) == 0 {
			break
		}
		overlapped = running
	}
	must(t, <-deleted)
	e.waitReconciled(t, p, rv)
	if !overlapped {
		t.Errorf("the edit's reconcile did not run while the DEL was in flight")
	} else {
		t.Log("the edit's reconcile ran while the DEL held the sandbox")
	}
	if e.metric(t, plugsOK) != plugs {
		t.Errorf("a plug ran for a sandbox being deleted")
	}

	// The DEL arrives while the plug holds the sandbox: it waits for the
	// plug, then deletes net1 with the rest.
	p = pod("race-inflight")
	plugs = e.metric(t, plugsOK)
	rv = patchAnnotation(t, p, selection.NetworksAnnotation, "racy")
	waitLinks(t, p, "net1 made by the plug's delegate", net1)
	if e.metric(t, plugsOK) != plugs {
		t.Fatal("the plug finished before the DEL was sent: the delay fault did not hold it")
	}
	start := time.Now()
	must(t, e.rt.Del(ctx, p))
	waited := time.Since(start)
	e.waitReconciled(t, p, rv)
	if e.metric(t, plugsOK) != plugs+1 {
		t.Errorf("the plug in flight at the DEL did not finish")
	}
	if waited < 500*time.Millisecond {
		t.Errorf("the DEL took %s: it did not wait for the plug holding the sandbox", waited)
	}
	t.Logf("the DEL waited %s for the plug in flight", waited.Round(time.Millisecond))

	// The daemon sees the edit after the DEL: no sandbox, nothing plugged.
	p = pod("race-after")
	plugs = e.metric(t, plugsOK)
	must(t, e.rt.Del(ctx, p))
	rv = patchAnnotation(t, p, selection.NetworksAnnotation, "racy")
	e.waitReconciled(t, p, rv)
	if e.metric(t, plugsOK) != plugs {
		t.Errorf("a plug ran for a deleted sandbox")
	}

	// The plug is done before the DEL.
	p = pod("race-before")
	rv = patchAnnotation(t, p, selection.NetworksAnnotation, "racy")
	waitLinks(t, p, "net1", net1)
	e.waitReconciled(t, p, rv)
	must(t, e.rt.Del(ctx, p))

	// The DEL right behind the edit, a few ms apart (not synchronisation:
	// the order is left to the daemon), counted by what the daemon did.
	orders := map[string]int{}
	for i := range 5 {
		p := pod(fmt.Sprintf("race-%d", i))
		plugs := e.metric(t, plugsOK)
		rv := patchAnnotation(t, p, selection.NetworksAnnotation, "racy")
		time.Sleep(time.Duration(i) * 5 * time.Millisecond)
		must(t, e.rt.Del(ctx, p))
		e.waitReconciled(t, p, rv)
		if e.metric(t, plugsOK) > plugs {
			orders["plug, then DEL"]++
		} else {
			orders["DEL, then no plug"]++
		}
	}
	t.Logf("DEL 0-20 ms behind the edit, over 5 pods: %v", orders)
	e.assertNoLeaks()
}

// A plug whose delegate fails leaves nothing behind and says so.
func TestHotplugDelegateFailure(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "broken", `{"cniVersion":"1.0.0","name":"broken","type":"macvlan","master":"nosuchdev0",
		"ipam":{"type":"host-local","dataDir":"`+e.ipamDir+`","subnet":"192.168.27.0/24"}}`, nil)
	e.createNAD("default", "fine", e.macvlanConf("fine", "192.168.28"), nil)
	p := e.newPod("default", "hot-fail", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	setNetworks(t, p, "broken")
	if msg := waitEvent(t, p, "FailedAddingInterface"); !strings.Contains(msg, "default/broken (interface net1)") {
		t.Errorf("event = %q", msg)
	}
	if links, _ := podLinks(t, p); len(links) != 1 {
		t.Errorf("interfaces after a failed plug: %v", keys(links))
	}
	if n := len(e.allocations()); n != 1 {
		t.Errorf("IPs allocated after a failed plug: %v", e.allocations())
	}
	setNetworks(t, p, "fine")
	waitLinks(t, p, "net1 on fine", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.28.")(l["net1"]) })
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// The API server goes away right after an annotation edit, while its plug
// runs: the plug still finishes (from the informer cache) and
// network-status catches up when the API server is back. The plug is held
// (a delay fault) until the API server is gone, and checked to finish
// during the outage.
func TestHotplugDuringAPIOutage(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	e.daemon.ExtraArgs = []string{"--test-faults", "add:after:net1=delay:2s"} // the plug ends 2 s after its delegate
	must(t, e.daemon.Start())
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.29"), nil)
	p := e.newPod("default", "hot-outage", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	networkStatus(t, p)
	plugs := e.metric(t, plugsOK)
	setNetworks(t, p, "mv")
	// The daemon has the edit and its plug runs: the delegate made net1.
	waitLinks(t, p, "net1 made by the plug's delegate", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.29.")(l["net1"]) })
	api.KillAPIServer()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			must(t, api.StartAgain())
		}
	})
	if e.metric(t, plugsOK) != plugs {
		t.Fatal("the plug finished before the API server went away: no outage to survive")
	}
	deadline := time.Now().Add(15 * time.Second)
	for e.metric(t, plugsOK) == plugs {
		if time.Now().After(deadline) {
			t.Fatal("the plug did not finish during the outage")
		}
		time.Sleep(10 * time.Millisecond)
	}
	must(t, api.StartAgain())
	restarted = true
	if got := statusNames(t, p, 2); !strings.HasSuffix(got, "default/mv@net1") {
		t.Errorf("network-status after the outage = %s", got)
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// Hot-plugged attachments are ordinary records: CHECK checks them and GC
// removes them with a stale sandbox.
func TestHotplugCoveredByCheckAndGC(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.30"), nil)
	live := e.newPod("default", "hot-live", nil)
	stale := e.newPod("default", "hot-stale", nil)
	ctx := context.Background()
	for _, p := range []*harness.Pod{live, stale} {
		_, err := e.rt.Add(ctx, p)
		must(t, err)
		setNetworks(t, p, "mv")
		waitLinks(t, p, "net1", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.30.")(l["net1"]) })
	}
	must(t, e.rt.Check(ctx, live))
	must(t, e.rt.GC(ctx, live))
	if links, _ := podLinks(t, stale); len(links) != 0 {
		t.Errorf("GC left the stale sandbox's interfaces: %v", keys(links))
	}
	if n := len(e.allocations()); n != 2 {
		t.Errorf("want the live pod's 2 IPs allocated after GC, have %v", e.allocations())
	}
	must(t, e.rt.Del(ctx, live))
	e.assertNoLeaks()
}
