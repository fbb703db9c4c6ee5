package integration

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/rewire-cni/rewire/pkg/selection"
)

// clusterNetwork named by a NAD in multusNamespace, defaultNetworks added to
// every pod except those in systemNamespaces.
func TestClusterNetworkNADAndDefaultNetworks(t *testing.T) {
	ns := "rw-system"
	e := newEnv(t, envOpts{noStart: true})
	e.createNAD(ns, "cluster-nad", e.clusterConf([2]int{}), nil)
	e.createNAD(ns, "always", e.macvlanConf("always", "192.168.12"), nil)
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.13"), nil)
	e.daemon.ExtraArgs = nil
	must(t, writeConfig(e, fmt.Sprintf("clusterNetwork: cluster-nad\nmultusNamespace: %s\ndefaultNetworks: [always]\nsystemNamespaces: [kube-system]\nbinDirs: [%s]\n", ns, tools)))
	must(t, e.daemon.Start())
	must(t, e.daemon.WaitReady(10e9))

	ctx := context.Background()
	p := e.newPod("default", "with-defaults", map[string]string{selection.NetworksAnnotation: "mv"})
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	st := networkStatus(t, p)
	var got []string
	for _, s := range st {
		got = append(got, s.Name+"@"+s.Interface)
	}
	if want := ns + "/cluster-nad@eth0 " + ns + "/always@net1 default/mv@net2"; strings.Join(got, " ") != want {
		t.Errorf("network-status = %v, want %s", got, want)
	}
	sys := e.newPod("kube-system", "system-pod", nil)
	_, err = e.rt.Add(ctx, sys)
	must(t, err)
	if links, _ := podLinks(t, sys); len(links) != 1 {
		t.Errorf("a system-namespace pod must get the cluster network only, got %v", keys(links))
	}
	must(t, e.rt.Del(ctx, p))
	must(t, e.rt.Del(ctx, sys))
	e.assertNoLeaks()
}

// bandwidth and portMappings from a selection element reach plugins that
// declare the capabilities: tbf on the host side, an ifb for ingress.
func TestBandwidthAndPortMappingsCapabilities(t *testing.T) {
	e := newEnv(t, envOpts{})
	br := e.bridge + "c"
	t.Cleanup(func() { deleteLink(br) })
	e.createNAD("default", "shaped", `{"cniVersion":"1.0.0","name":"shaped","plugins":[
		{"type":"bridge","bridge":"`+br+`","ipam":{"type":"host-local","dataDir":"`+e.ipamDir+`","ranges":[[{"subnet":"10.253.`+itoa(e.n)+`.0/24"}]]}},
		{"type":"bandwidth","capabilities":{"bandwidth":true}},
		{"type":"portmap","capabilities":{"portMappings":true},"snat":false}]}`, nil)
	p := e.newPod("default", "shaped", map[string]string{selection.NetworksAnnotation: `[{"name":"shaped",
		"bandwidth":{"ingressRate":1000000,"ingressBurst":100000,"egressRate":2000000,"egressBurst":200000},
		"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]}]`})
	ctx := context.Background()
	before := hostQdiscs(t, "tbf")
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	if n := hostQdiscs(t, "tbf") - before; n != 2 {
		t.Errorf("want 2 new tbf qdiscs (ingress and egress shaping), found %d", n)
	}
	must(t, e.rt.Del(ctx, p))
	if n := hostQdiscs(t, "tbf") - before; n != 0 {
		t.Errorf("%d tbf qdiscs left after DEL", n)
	}
	e.assertNoLeaks(br)
}

// hostQdiscs counts the host's qdiscs of a kind.
func hostQdiscs(t *testing.T, kind string) int {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	qs, err := netlink.QdiscList(nil)
	must(t, err)
	n := 0
	for _, q := range qs {
		if q.Type() == kind {
			n++
		}
	}
	return n
}
