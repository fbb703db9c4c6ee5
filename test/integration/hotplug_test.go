package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
	var v interface{} = value
	if value == "" {
		v = nil
	}
	body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{
		"annotations": map[string]interface{}{key: v}}})
	_, err := api.Client.CoreV1().Pods(p.Namespace).Patch(context.Background(), p.Name, types.MergePatchType, body, metav1.PatchOptions{})
	must(t, err)
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
	waitEvent(t, p, "InterfaceAdded")

	setNetworks(t, p, "mv-a,mv-b")
	waitLinks(t, p, "net2 on mv-b", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.22.")(l["net2"]) })

	setNetworks(t, p, "mv-b") // mv-b keeps net2
	links := waitLinks(t, p, "net1 removed", func(l map[string]harness.Link) bool { _, ok := l["net1"]; return !ok })
	if !hasAddrIn("192.168.22.")(links["net2"]) {
		t.Errorf("net2 changed while net1 was removed: %+v", links)
	}
	waitEvent(t, p, "InterfaceRemoved")
	if got := statusNames(t, p, 2); got != cluster+" default/mv-b@net2" {
		t.Errorf("network-status = %s", got)
	}

	setNetworks(t, p, "mv-a@net2") // swap the network behind net2
	waitLinks(t, p, "net2 on mv-a", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.21.")(l["net2"]) && len(l) == 2 })

	setNetworks(t, p, "[{") // garbage: rejected, nothing changes
	waitEvent(t, p, "InterfaceRejected")
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
	if msg := waitEvent(t, p, "InterfaceRejected"); !strings.Contains(msg, "namespace isolation") {
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

// The pod's sandbox deleted while a plug may be in flight: whatever order
// the daemon sees them in, nothing leaks.
func TestHotplugRacingDel(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "racy", e.macvlanConf("racy", "192.168.26"), nil)
	ctx := context.Background()
	for i := range 5 {
		p := e.newPod("default", fmt.Sprintf("race-%d", i), nil)
		_, err := e.rt.Add(ctx, p)
		must(t, err)
		setNetworks(t, p, "racy")
		time.Sleep(time.Duration(i) * 5 * time.Millisecond)
		must(t, e.rt.Del(ctx, p))
	}
	time.Sleep(500 * time.Millisecond) // let any queued reconcile run
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
	if msg := waitEvent(t, p, "InterfaceAddFailed"); !strings.Contains(msg, "default/broken (interface net1)") {
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

// The API server goes away right after an annotation edit: the plug still
// happens (from the informer cache) and network-status catches up when the
// API server is back.
func TestHotplugDuringAPIOutage(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.29"), nil)
	p := e.newPod("default", "hot-outage", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	networkStatus(t, p)
	setNetworks(t, p, "mv")
	time.Sleep(100 * time.Millisecond) // the watch delivers the edit
	api.StopAPIServer()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			must(t, api.StartAgain())
		}
	})
	waitLinks(t, p, "net1 during the outage", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.29.")(l["net1"]) })
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
