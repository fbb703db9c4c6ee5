package handover

import (
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// TestSeedNeighbours: the host side of a pod's new primary does not answer
// neighbour solicitations yet (its addresses are still in duplicate
// address detection, here for 30 s), so the pod cannot reach a peer behind
// the host through it, nor the peer the pod. Once SeedNeighbours gave both
// ends each other's MAC, traffic flows at once both ways, and the entries
// name the right MACs.
func TestSeedNeighbours(t *testing.T) {
	host, pod, far := newNetNS(t), newNetNS(t), newNetNS(t)
	vethPair(t, host, "hf0", far, "fv0")
	addAddrs(t, host, "hf0", false, "fd77::1/64")
	addAddrs(t, far, "fv0", false, "fd77::2/64")
	addRoute(t, far, "fd99::/64", "fd77::1")
	setSysctl(t, host, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
	// The host's end of the pod's link runs DAD for 30 s.
	setSysctl(t, host, "/proc/sys/net/ipv6/conf/default/dad_transmits", "30")
	vethPair(t, pod, "rwsw0", host, "hv0")
	addAddrs(t, host, "hv0", true, "fd99::1/128")
	addAddrs(t, pod, "rwsw0", false, "fd99::2/64")
	addRoute(t, pod, "default", "fd99::1")
	podIP := net.ParseIP("fd99::2")
	must(t, host.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("hv0")
		if err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("fd99::2/128")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst})
	}))
	peer := net.ParseIP("fd77::2")
	if ok, err := ping(pod, peer, 300*time.Millisecond); err != nil || ok {
		t.Fatalf("before seeding, the pod reached %s (%v, %v): the host answered its solicitation, nothing to show", peer, ok, err)
	}
	if ok, err := ping(far, podIP, 300*time.Millisecond); err != nil || ok {
		t.Fatalf("before seeding, %s reached the pod (%v, %v)", peer, ok, err)
	}

	must(t, host.Do(func(ns.NetNS) error {
		return SeedNeighbours(pod.Path(), "rwsw0", []net.IP{podIP}, []string{"hv0", "nosuchlink"})
	}))

	for _, c := range []struct {
		from ns.NetNS
		to   net.IP
	}{{pod, peer}, {far, podIP}} {
		if ok, err := ping(c.from, c.to, 300*time.Millisecond); err != nil || !ok {
			t.Errorf("after seeding, no reply from %s (%v)", c.to, err)
		}
	}
	if got, err := neighbourMAC(pod, "rwsw0", net.ParseIP("fd99::1")); err != nil || got != mac(t, host, "hv0") {
		t.Errorf("pod's entry for its gateway: %q (%v), want hv0's %s", got, err, mac(t, host, "hv0"))
	}
	if got, err := neighbourMAC(host, "hv0", podIP); err != nil || got != mac(t, pod, "rwsw0") {
		t.Errorf("host's entry for the pod: %q (%v), want rwsw0's %s", got, err, mac(t, pod, "rwsw0"))
	}
}
