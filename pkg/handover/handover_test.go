package handover

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// podNS makes a netns with a veth "eth0" holding 10.9.0.5/24 and a default
// route via 10.9.0.1, plus "net1" (192.168.9.5/24) standing for a secondary
// network whose routes must never move.
func podNS(t *testing.T) ns.NetNS {
	t.Helper()
	n := newNetNS(t)
	must(t, n.Do(func(ns.NetNS) error {
		addVeth(t, "eth0", "10.9.0.5/24")
		addVeth(t, "net1", "192.168.9.5/24")
		l, _ := netlinksafe.LinkByName("eth0")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.9.0.1")})
	}))
	return n
}

func addVeth(t *testing.T, name, cidr string) {
	t.Helper()
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}))
	for _, n := range []string{name, name + "p"} {
		l, err := netlinksafe.LinkByName(n)
		must(t, err)
		must(t, netlink.LinkSetUp(l))
	}
	l, _ := netlinksafe.LinkByName(name)
	a, err := netlink.ParseAddr(cidr)
	must(t, err)
	must(t, netlink.AddrAdd(l, a))
}

// routes lists "table dst via gw dev" of every IPv4 route outside local.
func routes(t *testing.T, n ns.NetNS) []string {
	t.Helper()
	var out []string
	must(t, n.Do(func(ns.NetNS) error {
		rs, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		for _, r := range rs {
			if r.Table == unix.RT_TABLE_LOCAL {
				continue
			}
			l, _ := netlink.LinkByIndex(r.LinkIndex)
			dst := "default"
			if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" {
				dst = r.Dst.String()
			}
			s := table(r.Table) + " " + dst
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			out = append(out, s+" dev "+l.Attrs().Name)
		}
		return err
	}))
	sort.Strings(out)
	return out
}

func table(id int) string {
	if id == unix.RT_TABLE_MAIN {
		return "main"
	}
	return "pin"
}

func TestPinCutRename(t *testing.T) {
	n := podNS(t)
	must(t, Pin(n.Path(), "eth0"))
	want := []string{"main 192.168.9.0/24 dev net1", "pin 10.9.0.0/24 dev eth0", "pin 192.168.9.0/24 dev net1", "pin default via 10.9.0.1 dev eth0"}
	assertRoutes(t, n, want)
	pinned, err := Pinned(n.Path())
	must(t, err)
	if !pinned {
		t.Fatal("no pin rule after Pin")
	}
	must(t, Pin(n.Path(), "eth0")) // idempotent
	assertRoutes(t, n, want)

	// The new interface comes up ptp-style with the same address.
	must(t, n.Do(func(ns.NetNS) error {
		addVeth(t, "rwsw0", "10.9.0.5/24")
		l, _ := netlinksafe.LinkByName("rwsw0")
		_, sub, _ := net.ParseCIDR("10.9.0.0/24")
		must(t, netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: sub, Scope: netlink.SCOPE_NOWHERE}))
		must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.ParseIP("10.9.0.1"), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}))
		must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: sub, Gw: net.ParseIP("10.9.0.1")}))
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.9.0.1")})
	}))
	must(t, Cut(n.Path()))
	must(t, Cut(n.Path())) // idempotent
	if pinned, _ := Pinned(n.Path()); pinned {
		t.Fatal("pin rule left after Cut")
	}
	must(t, n.Do(func(ns.NetNS) error {
		l, _ := netlinksafe.LinkByName("eth0")
		return netlink.LinkDel(l)
	}))
	must(t, Rename(n.Path(), "rwsw0", "eth0"))
	must(t, Rename(n.Path(), "rwsw0", "eth0")) // idempotent
	// The kernel's prefix route that ptp had replaced does not come back.
	assertRoutes(t, n, []string{"main 10.9.0.0/24 via 10.9.0.1 dev eth0", "main 10.9.0.1/32 dev eth0",
		"main 192.168.9.0/24 dev net1", "main default via 10.9.0.1 dev eth0"})
	must(t, HasAddresses(n.Path(), "eth0", []net.IP{net.ParseIP("10.9.0.5")}))
	if err := HasAddresses(n.Path(), "eth0", []net.IP{net.ParseIP("10.9.0.6")}); err == nil {
		t.Fatal("HasAddresses found an address eth0 lacks")
	}
}

// During a switch every destination takes the path it took before, until
// the cut: the primary's (default route, own subnet) through the old
// interface, a secondary's subnet and its routes through the secondary,
// for both families; after the cut the primary's go through the new
// interface and the secondary's still through the secondary.
func TestPinKeepsEveryPath(t *testing.T) {
	n := podNS(t)
	must(t, n.Do(func(ns.NetNS) error {
		for _, c := range [][2]string{{"eth0", "fd09::5/64"}, {"net1", "fd19::5/64"}} {
			l, _ := netlinksafe.LinkByName(c[0])
			a, _ := netlink.ParseAddr(c[1])
			a.Flags = unix.IFA_F_NODAD
			must(t, netlink.AddrAdd(l, a))
		}
		eth0, _ := netlinksafe.LinkByName("eth0")
		net1, _ := netlinksafe.LinkByName("net1")
		_, v4, _ := net.ParseCIDR("172.20.0.0/16")
		_, v6, _ := net.ParseCIDR("fd29::/48")
		must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("fd09::1")}))
		must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: net1.Attrs().Index, Dst: v4, Gw: net.ParseIP("192.168.9.1")}))
		return netlink.RouteAdd(&netlink.Route{LinkIndex: net1.Attrs().Index, Dst: v6, Gw: net.ParseIP("fd19::1")})
	}))
	primary := map[string]bool{"10.9.0.7": true, "8.8.8.8": true, "fd09::7": true, "2001:db8::1": true}
	dsts := []string{"10.9.0.7", "8.8.8.8", "192.168.9.7", "172.20.1.1", "fd09::7", "2001:db8::1", "fd19::7", "fd29::1"}
	check := func(stage, primaryDev string) {
		t.Helper()
		for _, d := range dsts {
			want := "net1"
			if primary[d] {
				want = primaryDev
			}
			if got := routeDev(t, n, d); got != want {
				t.Errorf("%s: route to %s goes through %q, want %s", stage, d, got, want)
			}
		}
	}
	check("before", "eth0")
	must(t, Pin(n.Path(), "eth0"))
	check("pinned", "eth0")
	// The new network takes main: its own default routes and subnets.
	must(t, n.Do(func(ns.NetNS) error {
		addVeth(t, "rwsw0", "10.9.0.5/24")
		l, _ := netlinksafe.LinkByName("rwsw0")
		a, _ := netlink.ParseAddr("fd09::5/64")
		a.Flags = unix.IFA_F_NODAD
		must(t, netlink.AddrAdd(l, a))
		must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("fd09::1")}))
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.9.0.1")})
	}))
	check("new network added", "eth0")
	must(t, Cut(n.Path()))
	check("cut", "rwsw0")
	if t.Failed() {
		t.Logf("routes at the end:\n%s", strings.Join(routes(t, n), "\n"))
	}
}

// routeDev is the interface the kernel routes dst through inside n.
func routeDev(t *testing.T, n ns.NetNS, dst string) string {
	t.Helper()
	var dev string
	must(t, n.Do(func(ns.NetNS) error {
		rs, err := netlink.RouteGet(net.ParseIP(dst))
		if err != nil || len(rs) == 0 {
			dev = fmt.Sprintf("none (%v)", err)
			return nil
		}
		l, err := netlink.LinkByIndex(rs[0].LinkIndex)
		if err != nil {
			return err
		}
		dev = l.Attrs().Name
		return nil
	}))
	return dev
}

func TestUnpinRestores(t *testing.T) {
	n := podNS(t)
	before := routes(t, n)
	must(t, Pin(n.Path(), "eth0"))
	must(t, Unpin(n.Path()))
	must(t, Unpin(n.Path())) // idempotent
	assertRoutes(t, n, before)
	if pinned, _ := Pinned(n.Path()); pinned {
		t.Fatal("pin rule left after Unpin")
	}
}

func TestRenameRefusesToClobber(t *testing.T) {
	n := podNS(t)
	err := Rename(n.Path(), "net1", "eth0")
	if err == nil || !strings.Contains(err.Error(), "eth0 exists") {
		t.Fatalf("Rename onto an existing name: %v", err)
	}
	if err := Rename(n.Path(), "nope", "other"); err == nil {
		t.Fatal("Rename of a missing link without the target succeeded")
	}
}

func TestAnnounceSendsGratuitousARP(t *testing.T) {
	n := podNS(t)
	// Listen on the peer of eth0 for the ARP.
	got := make(chan []byte, 1)
	must(t, n.Do(func(ns.NetNS) error {
		peer, err := netlinksafe.LinkByName("eth0p")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		must(t, unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: peer.Attrs().Index}))
		must(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}))
		go func() {
			defer unix.Close(fd)
			buf := make([]byte, 64)
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				got <- nil
				return
			}
			got <- buf[:n]
		}()
		return nil
	}))
	must(t, Announce(n.Path(), "eth0", []net.IP{net.ParseIP("10.9.0.5")}))
	p := <-got
	if len(p) < 28 || !net.IP(p[14:18]).Equal(net.ParseIP("10.9.0.5")) || !net.IP(p[24:28]).Equal(net.ParseIP("10.9.0.5")) {
		t.Fatalf("no gratuitous ARP for 10.9.0.5 seen on the peer: % x", p)
	}
}

func assertRoutes(t *testing.T, n ns.NetNS, want []string) {
	t.Helper()
	if got := routes(t, n); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestConnectionsAndSourcePin(t *testing.T) {
	n := podNS(t)
	// Only traffic from 10.9.0.5 stays on eth0's routes.
	must(t, Pin(n.Path(), "eth0", net.ParseIP("10.9.0.5")))
	var rules []netlink.Rule
	must(t, n.Do(func(ns.NetNS) error {
		var err error
		rules, err = netlinksafe.RuleList(netlink.FAMILY_V4)
		return err
	}))
	found := false
	for _, r := range rules {
		found = found || (r.Table == Table && r.Src != nil && r.Src.String() == "10.9.0.5/32")
	}
	if !found {
		t.Fatalf("no source pin rule: %+v", rules)
	}
	count := func() int {
		c, err := Connections(n.Path(), []net.IP{net.ParseIP("10.9.0.5")})
		must(t, err)
		return c
	}
	if c := count(); c != 0 {
		t.Fatalf("%d connections before any", c)
	}
	var ln net.Listener
	var conn net.Conn
	must(t, n.Do(func(ns.NetNS) error {
		var err error
		if ln, err = net.Listen("tcp4", "10.9.0.5:0"); err != nil {
			return err
		}
		conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	}))
	defer ln.Close()
	peer, err := ln.Accept()
	must(t, err)
	// Both ends of the connection are local to 10.9.0.5; the listener is not counted.
	if c := count(); c != 2 {
		t.Fatalf("%d connections on 10.9.0.5, want 2", c)
	}
	conn.Close()
	peer.Close()
	if c := count(); c != 0 {
		t.Fatalf("%d connections after closing", c)
	}
	must(t, Cut(n.Path()))
	if pinned, _ := Pinned(n.Path()); pinned {
		t.Fatal("source pin rule left after Cut")
	}
}

// TestPinKeepsDefaultRouteChoice: a secondary whose IPAM adds a default
// route too (the seed document's macvlan-conf; libcni's ConfigureIface
// prepends it) leaves main with two IPv4 default routes of one metric, and
// the kernel picks the one whose gateway answers (fib_select_default). The
// pin table must hold both, in main's order, or lookups while pinned go to
// the first, here a gateway that never answers.
func TestPinKeepsDefaultRouteChoice(t *testing.T) {
	n := podNS(t)
	must(t, n.Do(func(ns.NetNS) error {
		eth0, _ := netlinksafe.LinkByName("eth0")
		net1, _ := netlinksafe.LinkByName("net1")
		must(t, netlink.RouteAddEcmp(&netlink.Route{LinkIndex: net1.Attrs().Index, Gw: net.ParseIP("192.168.9.1")}))
		mac, _ := net.ParseMAC("02:00:00:00:09:01")
		must(t, netlink.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP("10.9.0.1"),
			HardwareAddr: mac, State: netlink.NUD_PERMANENT}))
		return netlink.NeighAdd(&netlink.Neigh{LinkIndex: net1.Attrs().Index, IP: net.ParseIP("192.168.9.1"), State: netlink.NUD_FAILED})
	}))
	defaults := 0
	for _, r := range routes(t, n) {
		if strings.HasPrefix(r, "main default") {
			defaults++
		}
	}
	if got := routeDev(t, n, "8.8.8.8"); defaults != 2 || got != "eth0" {
		t.Fatalf("precondition: want two default routes in main and lookups through eth0, got %d and %s:\n%s",
			defaults, got, strings.Join(routes(t, n), "\n"))
	}
	must(t, Pin(n.Path(), "eth0"))
	if got := routeDev(t, n, "8.8.8.8"); got != "eth0" {
		t.Errorf("pinned: route to 8.8.8.8 goes through %s, want eth0 as before the pin:\n%s", got, strings.Join(routes(t, n), "\n"))
	}
	must(t, Unpin(n.Path()))
	if got := routeDev(t, n, "8.8.8.8"); got != "eth0" {
		t.Errorf("unpinned: route to 8.8.8.8 goes through %s, want eth0:\n%s", got, strings.Join(routes(t, n), "\n"))
	}
}
