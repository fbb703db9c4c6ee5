package executor

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/rewire-cni/rewire/pkg/store"
)

// Pods routed behind the host on one bridge's subnet turn proxy ARP on for
// it; when they all go at once, from concurrent DELs, it is off again with
// its proxy_delay back: each DEL must not keep it for the other.
func TestHostChangesOfConcurrentPods(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a network namespace)")
	}
	host, err := testutils.NewNS()
	must(t, err)
	t.Cleanup(func() { _ = host.Close(); _ = testutils.UnmountNS(host) })
	must(t, host.Do(func(ns.NetNS) error { return routedBesideBridge("br0", "rt0") }))

	const pods, rounds = 4, 20
	e := New(nil, newStore(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for round := 0; round < rounds; round++ {
		sbs := make([]*store.Sandbox, pods)
		for i := range sbs {
			sbs[i] = &store.Sandbox{ContainerID: fmt.Sprintf("c%d", i), Complete: true}
			must(t, e.store.Commit(sbs[i]))
		}
		concurrently(t, host, sbs, func(i int, sb *store.Sandbox) {
			e.proxyOn(sb, []net.IP{net.IPv4(10, 99, 0, byte(10+i))}, []string{"rt0"}, nil)
			if err := e.store.Put(sb); err != nil {
				t.Error(err)
			}
		})
		if got := readSysctls(t, host, "br0"); got != "proxy_arp=1 proxy_delay=0" {
			t.Fatalf("round %d: with %d routed pods on br0's subnet: %s", round, pods, got)
		}
		concurrently(t, host, sbs, func(_ int, sb *store.Sandbox) {
			e.undoHostChanges(sb)
			if err := e.store.Delete(sb.ContainerID); err != nil {
				t.Error(err)
			}
		})
		if got := readSysctls(t, host, "br0"); got != "proxy_arp=0 proxy_delay=80" {
			t.Fatalf("round %d: after every pod's DEL: %s, want proxy_arp=0 proxy_delay=80", round, got)
		}
	}
}

// routedBesideBridge adds an up bridge holding 10.99.0.1/24 and an up veth
// routing 10.99.0.0/25 (routed pods on the bridge's subnet).
func routedBesideBridge(bridge, link string) error {
	lo, err := netlinksafe.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: link}, PeerName: link + "p"}
	for _, l := range []netlink.Link{br, v} {
		if err := netlink.LinkAdd(l); err != nil {
			return fmt.Errorf("adding %s: %w", l.Attrs().Name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	addr, _ := netlink.ParseAddr("10.99.0.1/24")
	if err := netlink.AddrAdd(br, addr); err != nil {
		return err
	}
	_, dst, _ := net.ParseCIDR("10.99.0.0/25")
	return netlink.RouteAdd(&netlink.Route{LinkIndex: v.Attrs().Index, Dst: dst})
}

// concurrently runs f for every sandbox at once, each in netns n.
func concurrently(t *testing.T, n ns.NetNS, sbs []*store.Sandbox, f func(int, *store.Sandbox)) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, sb := range sbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := n.Do(func(ns.NetNS) error { f(i, sb); return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
}

func readSysctls(t *testing.T, n ns.NetNS, bridge string) string {
	t.Helper()
	var out []string
	must(t, n.Do(func(ns.NetNS) error {
		for name, path := range map[string]string{
			"proxy_arp":   "/proc/sys/net/ipv4/conf/" + bridge + "/proxy_arp",
			"proxy_delay": "/proc/sys/net/ipv4/neigh/" + bridge + "/proxy_delay",
		} {
			raw, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out = append(out, name+"="+strings.TrimSpace(string(raw)))
		}
		return nil
	}))
	if out[0] > out[1] {
		out[0], out[1] = out[1], out[0]
	}
	return strings.Join(out, " ")
}
