package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/test/harness"
)

// netnsList is the network namespaces an env made, safe for concurrent
// newPod calls.
type netnsList struct {
	mu   sync.Mutex
	list []ns.NetNS
}

func (l *netnsList) add(n ns.NetNS) {
	l.mu.Lock()
	l.list = append(l.list, n)
	l.mu.Unlock()
}

func (l *netnsList) all() []ns.NetNS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ns.NetNS(nil), l.list...)
}

// scope is what the env makes on the host (see harness.Scope): the links
// it names, all rw<letters><n><letters> (its bridges rwbr<n>..., master
// rwm<n> and rwm<n>p, clients such as rwcl<n>), every host link whose
// veth peer is in one of its pods' network namespaces (the host side of
// bridge and ptp attachments) and the ports of its bridges, its subnets
// 10.250-255.<n>.0/24 and fd50-fd5f:<n>::/64, and handover's routing table.
func (e *env) scope() harness.Scope {
	var prefixes []netip.Prefix
	for i := range 6 {
		prefixes = append(prefixes, netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 250+i, e.n)))
	}
	for i := range 16 {
		prefixes = append(prefixes, netip.MustParsePrefix(fmt.Sprintf("fd5%x:%d::/64", i, e.n)))
	}
	return harness.Scope{
		Names:    regexp.MustCompile(fmt.Sprintf(`^rw[a-z]*%d[a-z]*$`, e.n)),
		NetNS:    e.netns.all(),
		Prefixes: prefixes,
		Tables:   []int{handover.Table},
	}
}

// snapshot records the env's part of the host and its watched directories.
func (e *env) snapshot() (harness.Snapshot, error) {
	return harness.TakeScopedSnapshot(e.scope(), e.watched()...)
}

// leaks describes what the env's part of the host gained or lost since the
// env was made ("" when nothing), the links named in allowed and the env's
// bridge and master left out. rewired changes record files just after its
// answers: a difference counts once it stayed for leakSettle.
func (e *env) leaks(allowed ...string) string {
	e.t.Helper()
	allowed = append(allowed, e.bridge, e.master, e.master+"p")
	allowed = append(allowed, e.fixtures...)
	for deadline := time.Now().Add(leakSettle); ; time.Sleep(20 * time.Millisecond) {
		after, err := e.snapshot()
		must(e.t, err)
		d := e.before.Without(allowed...).Diff(after.Without(allowed...))
		if d == "" || time.Now().After(deadline) {
			return d
		}
	}
}

const leakSettle = 3 * time.Second

// TestLeakCheckScope: the leak check looks at what the env made and only
// at that. Someone else's veth (its peer in a namespace that is not the
// env's, named and addressed outside the env's naming and subnets) with a
// route and a policy rule, made during the test, and someone else's link
// that goes away during it, do not fail it; a host-side veth left behind
// for one of the env's pods, a port of the env's bridge and a link holding
// an address of the env's subnet do.
func TestLeakCheckScope(t *testing.T) {
	id := os.Getpid() % 100000
	gone := fmt.Sprintf("lkg%d", id)
	hostVeth(t, gone, nil, "198.51.100.9/30")
	e := newEnv(t, envOpts{})
	p := e.newPod("default", "scope", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)

	deleteLink(gone)
	other, err := testutils.NewNS() // another runtime's pod
	must(t, err)
	t.Cleanup(func() { _ = other.Close(); _ = testutils.UnmountNS(other) })
	foreign := fmt.Sprintf("lkf%d", id)
	hostVeth(t, foreign, other, "198.51.100.1/30")
	hostDo(t, func() error {
		l, err := netlinksafe.LinkByName(foreign)
		if err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("203.0.113.0/24")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst}); err != nil {
			return err
		}
		rule := netlink.NewRule()
		rule.Src, rule.Table, rule.Priority = &net.IPNet{IP: net.ParseIP("198.51.100.0").To4(), Mask: net.CIDRMask(30, 32)}, 4242, 4242
		t.Cleanup(func() { _ = netlink.RuleDel(rule) })
		return netlink.RuleAdd(rule)
	})
	must(t, e.rt.Del(ctx, p))
	if d := e.leaks(); d != "" {
		t.Errorf("someone else's links, route and rule failed the leak check:\n%s", d)
	}

	// What the env made is still checked: each of these is a leak.
	for i, tc := range []struct {
		name, what string
		make       func(name string)
	}{
		{"pod's host veth", "leaked link: %s\n", func(name string) { hostVeth(t, name, p.NetNS, "") }},
		{"bridge port", "leaked link: %s\n", func(name string) {
			hostVeth(t, name, nil, "")
			hostDo(t, func() error {
				l, err := netlinksafe.LinkByName(name)
				if err != nil {
					return err
				}
				br, err := netlinksafe.LinkByName(e.bridge)
				if err != nil {
					return err
				}
				return netlink.LinkSetMaster(l, br)
			})
		}},
		{"address in the env's subnet", "leaked address: %s " + e.subnet + ".77/32\n", func(name string) {
			hostVeth(t, name, nil, e.subnet+".77/32")
		}},
	} {
		name := fmt.Sprintf("veth%08x", id*4+i) // named like a plugin's
		tc.make(name)
		d := e.leaks()
		if want := fmt.Sprintf(tc.what, name); !strings.Contains(d, want) {
			t.Errorf("%s: the leak check did not report %q; it said:\n%s", tc.name, want, d)
		}
		deleteLink(name)
	}
	if d := e.leaks(); d != "" {
		t.Errorf("after removing the test's own leaks:\n%s", d)
	}
}

// hostVeth makes a veth pair "name" / "name"+"p" on the host with cidr (if
// any) on the first end, the peer moved into peerNS (if given); removed
// when the test ends.
func hostVeth(t *testing.T, name string, peerNS ns.NetNS, cidr string) {
	t.Helper()
	hostDo(t, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			return err
		}
		t.Cleanup(func() { deleteLink(name) })
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		if cidr != "" {
			a, err := netlink.ParseAddr(cidr)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(l, a); err != nil {
				return err
			}
		}
		if peerNS == nil {
			return nil
		}
		peer, err := netlinksafe.LinkByName(name + "p")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(peer, int(peerNS.Fd()))
	})
}
