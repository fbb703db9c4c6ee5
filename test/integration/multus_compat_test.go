package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// What a Multus user has, taken over unchanged (issue 14).

// staticNAD is the NAD: macvlan with static IPAM, no plugin
// declaring a capability.
func (e *env) staticNAD() string {
	return `{"cniVersion":"0.4.0","plugins":[{"type":"macvlan","master":"` + e.master + `","mode":"bridge","ipam":{"type":"static"}}]}`
}

// eventMessages lists the messages of the pod's Events with reason, once
// there are at least n.
func eventMessages(t testing.TB, p *harness.Pod, reason string, n int) []string {
	t.Helper()
	msgs := waitEvents(t, p, reason, n)
	slices.Sort(msgs)
	return msgs
}

// ips and mac on a network none of whose plugins declares the capability:
// as under Multus, static IPAM and macvlan get them as IP= and MAC= in
// CNI_ARGS, at ADD and at hot-plug, and the pod gets an Event saying so.
func TestMultusIPsAndMACInCNIArgs(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "net", e.staticNAD(), nil)
	p := e.newPod("default", "static-ip", map[string]string{selection.NetworksAnnotation: `[{"name":"net","ips":["10.1.1.21/24"],"mac":"02:00:00:01:01:21"}]`})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	links, err := podLinks(t, p)
	must(t, err)
	if l := links["net1"]; !slices.Equal(l.Addrs, []string{"10.1.1.21/24"}) || l.MAC != "02:00:00:01:01:21" {
		t.Errorf("net1 = %+v, want 10.1.1.21/24 and 02:00:00:01:01:21", l)
	}
	if msg := waitEvent(t, p, kube.ReasonCNIArgsFallback); !strings.Contains(msg, "default/net (net1): mac and ips, as MAC=02:00:00:01:01:21;IP=10.1.1.21/24") {
		t.Errorf("event = %q", msg)
	}

	// Hot-plug: one more element asking for a mac is plugged, not rejected.
	setNetworks(t, p, `[{"name":"net","ips":["10.1.1.21/24"],"mac":"02:00:00:01:01:21"},{"name":"net","mac":"02:00:00:01:01:22","ips":["10.1.1.22/24"]}]`)
	waitLinks(t, p, "net2 with its MAC and address", func(l map[string]harness.Link) bool {
		return l["net2"].MAC == "02:00:00:01:01:22" && slices.Equal(l["net2"].Addrs, []string{"10.1.1.22/24"})
	})
	if msgs := eventMessages(t, p, kube.ReasonCNIArgsFallback, 2); !strings.Contains(strings.Join(msgs, "\n"), "default/net (net2): mac and ips, as MAC=02:00:00:01:01:22;IP=10.1.1.22/24") {
		t.Errorf("events = %q", msgs)
	}
	waitEvent(t, p, kube.ReasonInterfaceAdded)
	must(t, e.rt.Check(ctx, p)) // CHECK gets the same CNI_ARGS: static finds its addresses
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// With strictCapabilities the same request is refused, as before: nothing
// is created and the error says what would make it work.
func TestMultusStrictCapabilities(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "strictCapabilities: true\n"})
	e.createNAD("default", "net", e.staticNAD(), nil)
	p := e.newPod("default", "strict", map[string]string{selection.NetworksAnnotation: `[{"name":"net","ips":["10.1.1.21/24"],"mac":"02:00:00:01:01:21"}]`})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	if err == nil {
		t.Fatal("ADD succeeded")
	}
	if te := cniError(t, err); te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, `"mac" requested but no plugin of the network declares the "mac" capability (strictCapabilities`) {
		t.Errorf("error = code %d %q", te.Code, te.Msg)
	}
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces created: %v", keys(links))
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// A static pod: the runtime knows it by its own UID, the API by its mirror
// pod (kubernetes.io/config.mirror holds the static pod's UID). Its ADD
// succeeds and network-status lands on the mirror pod. A pod whose UID
// differs without being a mirror pod still gets "try again later".
func TestStaticPodMirror(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "podWait: 300ms\n"})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.61"), nil)
	staticUID := fmt.Sprintf("%032x", 0xc0ffee00+e.n) // a config hash, as the kubelet makes it
	p := e.newPod("default", "static-"+e.node, map[string]string{kube.MirrorAnnotation: staticUID, selection.NetworksAnnotation: "mv"})
	p.UID = staticUID
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	links, err := podLinks(t, p)
	must(t, err)
	if len(links["eth0"].Addrs) != 1 || len(links["net1"].Addrs) != 1 {
		t.Errorf("interfaces = %+v", links)
	}
	if got := statusNames(t, p, 2); got != fmt.Sprintf("cluster-%d@eth0 default/mv@net1", e.n) {
		t.Errorf("network-status = %s", got)
	}
	must(t, e.rt.Del(ctx, p))

	q := e.newPod("default", "not-mirror", nil)
	q.UID = staticUID
	_, err = e.rt.Add(ctx, q)
	if err == nil {
		t.Fatal("ADD with another pod's UID succeeded")
	}
	if te := cniError(t, err); te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "the runtime asked for "+staticUID) {
		t.Errorf("error = code %d %q, want code 11", te.Code, te.Msg)
	}
	if links, _ := podLinks(t, q); len(links) != 0 {
		t.Errorf("interfaces created: %v", keys(links))
	}
	must(t, e.rt.Del(ctx, q))
	e.assertNoLeaks()
}

// v1.multus-cni.io/default-network without a namespace names a NAD of
// multusNamespace, as in Multus, also in its JSON form.
func TestDefaultNetworkInMultusNamespace(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "multusNamespace: rw-system\n"})
	alt := e.bridge + "a"
	t.Cleanup(func() { deleteLink(alt) })
	e.createNAD("rw-system", "alt-primary", `{"cniVersion":"1.0.0","name":"alt-primary","type":"bridge","bridge":"`+alt+`",
		"isGateway":true,"ipam":{"type":"host-local","dataDir":"`+e.ipamDir+`","ranges":[[{"subnet":"10.252.`+itoa(e.n)+`.0/24"}]],
		"routes":[{"dst":"0.0.0.0/0"}]}}`, nil)
	ctx := context.Background()
	for _, value := range []string{"alt-primary", `[{"name":"alt-primary"}]`} {
		p := e.newPod("default", fmt.Sprintf("dn-%d", len(value)), map[string]string{selection.DefaultNetworkAnnotation: value})
		_, err := e.rt.Add(ctx, p)
		must(t, err)
		links, err := podLinks(t, p)
		must(t, err)
		if l := links["eth0"]; len(l.Addrs) != 1 || !strings.HasPrefix(l.Addrs[0], "10.252.") {
			t.Errorf("%s: eth0 = %+v, want an address of rw-system/alt-primary", value, l)
		}
		if st := networkStatus(t, p); len(st) != 1 || st[0].Name != "rw-system/alt-primary" || !st[0].Default {
			t.Errorf("%s: network-status = %+v", value, st)
		}
		must(t, e.rt.Del(ctx, p))
	}
	e.assertNoLeaks(alt)
}

// A thin Multus 00-multus.conf as rewired's config, unchanged: its
// delegates[0] is the cluster network, ADD answers "try again later" until
// its readinessindicatorfile exists, and the keys without a meaning for
// Rewire are listed in one log line.
func TestMultusConfigFile(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	indicator := filepath.Join(e.dir, "flannel-ready")
	must(t, writeConfig(e, fmt.Sprintf(`{
	  "cniVersion": "0.3.1",
	  "name": "multus-cni-network",
	  "type": "multus",
	  "capabilities": {"portMappings": true},
	  "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
	  "logFile": "/var/log/multus.log",
	  "logLevel": "verbose",
	  "cniDir": %q,
	  "binDir": %q,
	  "confDir": %q,
	  "readinessindicatorfile": %q,
	  "globalNamespaces": "default,other",
	  "delegates": [%s]
	}`, filepath.Join(e.dir, "multus"), tools, filepath.Join(e.dir, "net.d"), indicator, e.clusterConf([2]int{}))))
	must(t, e.daemon.Start())
	p := e.newPod("default", "multus-conf", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	if err == nil {
		t.Fatal("ADD succeeded before the readiness indicator file exists")
	}
	if te := cniError(t, err); te.Code != types.ErrTryAgainLater || !strings.Contains(te.Details, "readiness indicator file "+indicator) {
		t.Errorf("error = code %d %q %q, want code 11", te.Code, te.Msg, te.Details)
	}
	must(t, os.WriteFile(indicator, nil, 0o644))
	_, err = e.rt.Add(ctx, p)
	must(t, err)
	if st := networkStatus(t, p); len(st) != 1 || st[0].Name != fmt.Sprintf("cluster-%d", e.n) || !strings.HasPrefix(st[0].IPs[0], e.subnet+".") {
		t.Errorf("network-status = %+v, want the delegate's network", st)
	}
	log := e.daemon.Log()
	if n := strings.Count(log, "Multus configuration keys without a meaning for Rewire"); n != 1 ||
		!strings.Contains(log, `"keys":["capabilities","cniversion","kubeconfig","logfile","name","type"]`) {
		t.Errorf("want one log line listing the ignored keys:\n%s", tail(log, 20))
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}
