package integration

import (
	"context"
	"net"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/selection"
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
