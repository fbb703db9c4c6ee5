package integration

import (
	"context"
	"net"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// The seed document's verification: macvlan-conf + samplepod.
func TestSeedMacvlanSamplepod(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "macvlan-conf", e.macvlanConf("macvlan-conf", "192.168.1"), nil)
	p := e.newPod("default", "samplepod", map[string]string{selection.NetworksAnnotation: "macvlan-conf"})
	ctx := context.Background()

	r, err := e.rt.Add(ctx, p)
	must(t, err)
	res, err := current.NewResultFromResult(r)
	must(t, err)
	if len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.IP.String(), e.subnet+".") {
		t.Fatalf("runtime result should carry the cluster network IP, got %v", res.IPs)
	}

	links, err := podLinks(t, p)
	must(t, err)
	eth0, net1 := links["eth0"], links["net1"]
	if len(eth0.Addrs) != 1 || !strings.HasPrefix(eth0.Addrs[0], e.subnet+".") {
		t.Errorf("eth0 addresses = %v, want one in %s.0/24", eth0.Addrs, e.subnet)
	}
	if len(net1.Addrs) != 1 || !inRange(net1.Addrs[0], "192.168.1.200", "192.168.1.216") {
		t.Errorf("net1 addresses = %v, want one in 192.168.1.200-216", net1.Addrs)
	}
	if len(links) != 2 {
		t.Errorf("pod interfaces = %v, want eth0 and net1", keys(links))
	}

	st := networkStatus(t, p)
	if len(st) != 2 || st[0].Interface != "eth0" || !st[0].Default || st[1].Name != "default/macvlan-conf" ||
		st[1].Interface != "net1" || st[1].Default || st[1].MAC != net1.MAC {
		t.Errorf("network-status = %+v", st)
	}
	if msg := waitEvent(t, p, "AddedInterface"); !strings.Contains(msg, "net1") {
		t.Errorf("AddedInterface event = %q", msg)
	}

	must(t, e.rt.Check(ctx, p))
	must(t, e.rt.Del(ctx, p))
	must(t, e.rt.Del(ctx, p)) // idempotent
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces left in pod netns after DEL: %v", keys(links))
	}
	e.assertNoLeaks()
}

func inRange(cidr, lo, hi string) bool {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return false
	}
	v := ip.To4()
	l, h := net.ParseIP(lo).To4(), net.ParseIP(hi).To4()
	return string(v) >= string(l) && string(v) <= string(h)
}

// Three networks from a JSON annotation with interface, ips, mac and
// default-route keys, one NAD in another namespace.
func TestThreeNetworksJSONSelections(t *testing.T) {
	e := newEnv(t, envOpts{})
	bridgeB := e.bridge + "b"
	t.Cleanup(func() { deleteLink(bridgeB) })
	e.createNAD("default", "static-net", `{"cniVersion":"1.0.0","name":"static-net","plugins":[
		{"type":"macvlan","master":"`+e.master+`","mode":"bridge","capabilities":{"ips":true},"ipam":{"type":"static"}},
		{"type":"tuning","capabilities":{"mac":true}}]}`, nil)
	e.createNAD("default", "mv2", e.macvlanConf("mv2", "192.168.2"), nil)
	e.createNAD("other", "bridge-b", `{"cniVersion":"1.1.0","name":"bridge-b","type":"bridge","bridge":"`+bridgeB+`",
		"isGateway":true,"ipam":{"type":"host-local","dataDir":"`+e.ipamDir+`","ranges":[[{"subnet":"10.251.`+itoa(e.n)+`.0/24"}]]}}`, nil)
	gw := "10.251." + itoa(e.n) + ".1"
	p := e.newPod("default", "three", map[string]string{selection.NetworksAnnotation: `[
		{"name":"static-net","interface":"data0","ips":["10.77.0.5/24"],"mac":"02:00:00:aa:bb:cc"},
		{"name":"mv2"},
		{"name":"bridge-b","namespace":"other","default-route":["` + gw + `"]}]`})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)

	links, err := podLinks(t, p)
	must(t, err)
	if l := links["data0"]; len(l.Addrs) != 1 || l.Addrs[0] != "10.77.0.5/24" || l.MAC != "02:00:00:aa:bb:cc" {
		t.Errorf("data0 = %+v, want 10.77.0.5/24 and mac 02:00:00:aa:bb:cc", l)
	}
	if l := links["net1"]; len(l.Addrs) != 1 || !inRange(l.Addrs[0], "192.168.2.200", "192.168.2.216") {
		t.Errorf("net1 = %+v, want an address of mv2", l)
	}
	if l := links["net2"]; len(l.Addrs) != 1 || !strings.HasPrefix(l.Addrs[0], "10.251.") {
		t.Errorf("net2 = %+v, want an address of bridge-b", l)
	}
	if dev, _ := harness.DefaultRouteDev(p.NetNS); dev != "net2" {
		t.Errorf("default route via %q, want net2 (default-route of bridge-b)", dev)
	}
	st := networkStatus(t, p)
	var got []string
	for _, s := range st {
		got = append(got, s.Name+"@"+s.Interface)
	}
	want := "cluster-" + itoa(e.n) + "@eth0 default/static-net@data0 default/mv2@net1 other/bridge-b@net2"
	if strings.Join(got, " ") != want {
		t.Errorf("network-status order = %v, want %s", got, want)
	}
	if len(st) == 4 && (len(st[3].Gateway) != 1 || st[3].Gateway[0] != gw || len(st[0].Gateway) != 0) {
		t.Errorf("gateway should be reported on net2 only: %+v", st)
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks(bridgeB)
}

// The per-pod default-network annotation replaces the cluster network.
func TestDefaultNetworkOverride(t *testing.T) {
	e := newEnv(t, envOpts{})
	alt := e.bridge + "a"
	t.Cleanup(func() { deleteLink(alt) })
	e.createNAD("other", "alt-primary", `{"cniVersion":"1.0.0","name":"alt-primary","type":"bridge","bridge":"`+alt+`",
		"isGateway":true,"ipam":{"type":"host-local","dataDir":"`+e.ipamDir+`","ranges":[[{"subnet":"10.252.`+itoa(e.n)+`.0/24"}]],
		"routes":[{"dst":"0.0.0.0/0"}]}}`, nil)
	p := e.newPod("other", "override", map[string]string{selection.DefaultNetworkAnnotation: "alt-primary"})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	links, err := podLinks(t, p)
	must(t, err)
	if l := links["eth0"]; len(l.Addrs) != 1 || !strings.HasPrefix(l.Addrs[0], "10.252.") {
		t.Errorf("eth0 = %+v, want an address of alt-primary", l)
	}
	if st := networkStatus(t, p); len(st) != 1 || st[0].Name != "other/alt-primary" || !st[0].Default {
		t.Errorf("network-status = %+v", st)
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks(alt)
}

// Runtimes asking for any supported CNI version get a result in it.
func TestResultVersions(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			e := newEnv(t, envOpts{cniVersion: v})
			p := e.newPod("default", "ver-"+strings.ReplaceAll(v, ".", ""), nil)
			ctx := context.Background()
			r, err := e.rt.Add(ctx, p)
			must(t, err)
			if r.Version() != v {
				t.Errorf("result version %s, want %s", r.Version(), v)
			}
			if v != "0.3.1" {
				must(t, e.rt.Check(ctx, p))
			}
			must(t, e.rt.Del(ctx, p))
			e.assertNoLeaks()
		})
	}
}
