package handover

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The tests below build their own network namespaces and everything in them
// (links are created inside the namespaces, never in the test's own), need
// root and fail without it.

// wrongMAC is the stale MAC that neighbours hold before an announcement.
const wrongMAC = "02:00:00:00:00:99"

// newNetNS makes a network namespace with lo up, removed when the test ends.
func newNetNS(t *testing.T) ns.NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces)")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(); _ = testutils.UnmountNS(n) })
	must(t, n.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}))
	return n
}

// vethPair adds a veth pair, name in a and peer in b (which may be a), both up.
func vethPair(t *testing.T, a ns.NetNS, name string, b ns.NetNS, peer string) {
	t.Helper()
	must(t, a.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}
		if b != a {
			v.PeerNamespace = netlink.NsFd(int(b.Fd()))
		}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("adding veth %s: %w", name, err)
		}
		return nil
	}))
	up(t, a, name)
	up(t, b, peer)
}

func up(t *testing.T, n ns.NetNS, link string) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}))
}

// addBridge adds an up bridge to n with the given ports.
func addBridge(t *testing.T, n ns.NetNS, name string, ports ...string) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return fmt.Errorf("adding bridge %s: %w", name, err)
		}
		br, err := netlinksafe.LinkByName(name)
		if err != nil {
			return err
		}
		for _, p := range ports {
			l, err := netlinksafe.LinkByName(p)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMaster(l, br); err != nil {
				return fmt.Errorf("adding %s to %s: %w", p, name, err)
			}
		}
		return netlink.LinkSetUp(br)
	}))
}

// addAddrs adds addresses to link in n; IPv6 ones skip duplicate address
// detection unless dad.
func addAddrs(t *testing.T, n ns.NetNS, link string, dad bool, cidrs ...string) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		for _, c := range cidrs {
			a, err := netlink.ParseAddr(c)
			if err != nil {
				return err
			}
			if a.IP.To4() == nil && !dad {
				a.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(l, a); err != nil {
				return fmt.Errorf("adding %s to %s: %w", c, link, err)
			}
		}
		return nil
	}))
}

// addRoute adds "dst via gw" in n.
func addRoute(t *testing.T, n ns.NetNS, dst, gw string) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error {
		r := &netlink.Route{Gw: net.ParseIP(gw)}
		if dst != "default" {
			_, d, err := net.ParseCIDR(dst)
			if err != nil {
				return err
			}
			r.Dst = d
		}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("adding route %s via %s: %w", dst, gw, err)
		}
		return nil
	}))
}

func sysctl(t *testing.T, n ns.NetNS, path string) string {
	t.Helper()
	var v string
	must(t, n.Do(func(ns.NetNS) error {
		var err error
		v, err = readSysctl(path)
		return err
	}))
	return v
}

func setSysctl(t *testing.T, n ns.NetNS, path, value string) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error { return os.WriteFile(path, []byte(value), 0o644) }))
}

func mac(t *testing.T, n ns.NetNS, link string) string {
	t.Helper()
	var m string
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		m = l.Attrs().HardwareAddr.String()
		return nil
	}))
	return m
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// setNeighbour makes n hold a stale neighbour entry ip -> mac on link.
func setNeighbour(t *testing.T, n ns.NetNS, link string, ip net.IP, mac string) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return err
		}
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: family(ip), IP: ip,
			HardwareAddr: hw, State: netlink.NUD_STALE})
	}))
}

func delNeighbour(t *testing.T, n ns.NetNS, link string, ip net.IP) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		return netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: family(ip), IP: ip})
	}))
}

// neighbourMAC is the MAC n's neighbour entry for ip on link holds ("" when
// there is no entry or it has no MAC yet).
func neighbourMAC(n ns.NetNS, link string, ip net.IP) (string, error) {
	var m string
	err := n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		var neighs []netlink.Neigh
		err = retryDump(func() (err error) {
			neighs, err = netlink.NeighList(l.Attrs().Index, family(ip))
			return err
		})
		for _, e := range neighs {
			if e.IP.Equal(ip) && e.Flags&netlink.NTF_PROXY == 0 && e.HardwareAddr != nil {
				m = e.HardwareAddr.String()
			}
		}
		return err
	})
	return m, err
}

// waitNeighbour waits (up to 3 s) until n's neighbour entries for ips on link
// all hold want.
func waitNeighbour(t *testing.T, n ns.NetNS, link string, ips []net.IP, want string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for _, ip := range ips {
		for {
			got, err := neighbourMAC(n, link, ip)
			must(t, err)
			if got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("neighbour entry for %s on %s holds %q, want %s", ip, link, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// proxyEntries lists the proxy neighbour entries on link in n.
func proxyEntries(t *testing.T, n ns.NetNS, link string) []string {
	t.Helper()
	var out []string
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		var entries []netlink.Neigh
		err = retryDump(func() (err error) {
			entries, err = netlink.NeighProxyList(l.Attrs().Index, netlink.FAMILY_V6)
			return err
		})
		for _, e := range entries {
			if e.LinkIndex == l.Attrs().Index {
				out = append(out, e.IP.String())
			}
		}
		return err
	}))
	return out
}

// ping sends ICMP echo requests from n to dst every 100 ms until one is
// answered (true) or timeout passes (false).
func ping(n ns.NetNS, dst net.IP, timeout time.Duration) (bool, error) {
	network, laddr, request, reply := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if dst.To4() == nil {
		network, laddr, request, reply = "ip6:ipv6-icmp", "::", 128, 129
	}
	var c net.PacketConn
	if err := n.Do(func(ns.NetNS) (err error) {
		c, err = net.ListenPacket(network, laddr)
		return err
	}); err != nil {
		return false, err
	}
	defer c.Close()
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	buf := make([]byte, 1500)
	deadline := time.Now().Add(timeout)
	for seq := uint16(1); time.Now().Before(deadline); seq++ {
		msg := []byte{request, 0, 0, 0, idb[0], idb[1], byte(seq >> 8), byte(seq)}
		if request == 8 {
			binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg)) // the kernel does ICMPv6's
		}
		_, _ = c.WriteTo(msg, &net.IPAddr{IP: dst}) // unreachable for now: try again
		wait := time.Now().Add(100 * time.Millisecond)
		if wait.After(deadline) {
			wait = deadline
		}
		_ = c.SetReadDeadline(wait)
		for {
			k, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			if k >= 8 && buf[0] == reply && binary.BigEndian.Uint16(buf[4:]) == id && from.(*net.IPAddr).IP.Equal(dst) {
				return true, nil
			}
		}
	}
	return false, nil
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func parseIPs(ss ...string) []net.IP {
	var out []net.IP
	for _, s := range ss {
		ip, _, err := net.ParseCIDR(s)
		if err != nil {
			ip = net.ParseIP(s)
		}
		out = append(out, ip)
	}
	return out
}

// addrFlags returns the flags of ip on link in n.
func addrFlags(t *testing.T, n ns.NetNS, link string, ip net.IP) int {
	t.Helper()
	flags := -1
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return err
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V6)
		for _, a := range addrs {
			if a.IP.Equal(ip) {
				flags = a.Flags
			}
		}
		return err
	}))
	if flags < 0 {
		t.Fatalf("%s has no address %s", link, ip)
	}
	return flags
}

// TestAnnounceUpdatesNeighbours: a neighbour on the link that holds a stale
// MAC for the pod's addresses holds the link's MAC after Announce, through
// gratuitous ARP (IPv4) and unsolicited Neighbour Advertisements (IPv6),
// also when the IPv6 address is still tentative (the socket binds to it
// nonetheless).
func TestAnnounceUpdatesNeighbours(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
		dad   bool // the IPv6 addresses run duplicate address detection (tentative at Announce)
	}{
		{"IPv4", []string{"10.77.0.5/24"}, false},
		{"IPv6", []string{"fd00:77::5/64"}, false},
		{"IPv6 tentative", []string{"fd00:77::5/64"}, true},
		{"IPv6 link-local", []string{"fe80::77:5/64"}, false},
		{"dual stack", []string{"10.77.0.5/24", "10.77.0.7/24", "fd00:77::5/64", "fd00:77::7/64"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod, peer := newNetNS(t), newNetNS(t)
			vethPair(t, pod, "anpod0", peer, "anpeer0")
			addAddrs(t, peer, "anpeer0", false, "10.77.0.66/24", "fd00:77::66/64")
			addAddrs(t, pod, "anpod0", tc.dad, tc.addrs...)
			ips := parseIPs(tc.addrs...)
			for _, ip := range ips {
				setNeighbour(t, peer, "anpeer0", ip, wrongMAC)
			}
			if tc.dad {
				if f := addrFlags(t, pod, "anpod0", ips[0]); f&unix.IFA_F_TENTATIVE == 0 {
					t.Fatalf("%s is not tentative (flags %#x): the case tests nothing", ips[0], f)
				}
			}
			must(t, Announce(pod.Path(), "anpod0", ips))
			waitNeighbour(t, peer, "anpeer0", ips, mac(t, pod, "anpod0"))
		})
	}
}

// TestAnnounceSkipsLinksWithoutMAC: a link without a MAC gets no
// announcement and no error.
func TestAnnounceSkipsLinksWithoutMAC(t *testing.T) {
	pod := newNetNS(t)
	must(t, Announce(pod.Path(), "lo", parseIPs("127.0.0.1", "::1")))
}

// proxyHost is a "host" namespace with bridge pxbr0 whose port leads to a
// "neighbour" namespace on 10.61.0.0/24 and fd00:61::/64, and which routes
// 10.61.0.5 and fd00:61::5 (addresses of the bridge's subnets) through
// another veth to a "pod" namespace, as after the pod left the bridge.
type proxyHost struct {
	host, neighbour, pod ns.NetNS
	moved                []net.IP
}

func newProxyHost(t *testing.T) proxyHost {
	t.Helper()
	h := proxyHost{host: newNetNS(t), neighbour: newNetNS(t), pod: newNetNS(t), moved: parseIPs("10.61.0.5", "fd00:61::5")}
	setSysctl(t, h.host, "/proc/sys/net/ipv4/ip_forward", "1")
	setSysctl(t, h.host, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
	vethPair(t, h.host, "pxport0", h.neighbour, "pxnb0")
	addBridge(t, h.host, "pxbr0", "pxport0")
	addAddrs(t, h.host, "pxbr0", false, "10.61.0.1/24", "fd00:61::1/64")
	addAddrs(t, h.neighbour, "pxnb0", false, "10.61.0.2/24", "fd00:61::2/64")
	vethPair(t, h.host, "pxrt0", h.pod, "pxpod0")
	addAddrs(t, h.host, "pxrt0", false, "10.62.0.1/24", "fd00:62::1/64")
	addAddrs(t, h.pod, "pxpod0", false, "10.62.0.2/24", "fd00:62::2/64", "10.61.0.5/32", "fd00:61::5/128")
	addRoute(t, h.host, "10.61.0.5/32", "10.62.0.2")
	addRoute(t, h.host, "fd00:61::5/128", "fd00:62::2")
	addRoute(t, h.pod, "default", "10.62.0.1")
	addRoute(t, h.pod, "default", "fd00:62::1")
	return h
}

// pingAll pings every address in ips from n concurrently and returns the
// ones answered.
func pingAll(t *testing.T, n ns.NetNS, ips []net.IP, timeout time.Duration) []string {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var answered []string
	var errs []error
	for _, ip := range ips {
		wg.Go(func() {
			ok, err := ping(n, ip, timeout)
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			if ok {
				answered = append(answered, ip.String())
			}
		})
	}
	wg.Wait()
	must(t, errors.Join(errs...))
	return answered
}

// TestProxyNeighbours: after the pod's addresses moved off the bridge, a
// neighbour on the bridge reaches them through the host (proxy ARP, proxy
// NDP), its stale cache entries are redirected to the bridge's MAC at once,
// and UndoHostChanges takes back exactly what was changed.
func TestProxyNeighbours(t *testing.T) {
	h := newProxyHost(t)
	// Nothing answers for the moved addresses on the bridge yet.
	if got := pingAll(t, h.neighbour, h.moved, time.Second); len(got) > 0 {
		t.Fatalf("%v reachable from the bridge before ProxyNeighbours: the test proves nothing", got)
	}
	for _, ip := range h.moved {
		setNeighbour(t, h.neighbour, "pxnb0", ip, wrongMAC) // the pod's old MAC
	}

	var c HostChanges
	run := func() {
		t.Helper()
		must(t, h.host.Do(func(ns.NetNS) (err error) {
			// The neighbour's own addresses are still on the bridge: left alone.
			c, err = ProxyNeighbours("pxbr0", append(parseIPs("10.61.0.2", "fd00:61::2"), h.moved...))
			return err
		}))
	}
	run()
	want := HostChanges{Bridge: "pxbr0", ProxyARP: true, ProxyNDP: true, ProxyNeigh: []string{"fd00:61::5"}, ProxyDelay: "80"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("ProxyNeighbours reported %+v, want %+v", c, want)
	}
	if arp, ndp, delay := sysctl(t, h.host, proxyARPPath("pxbr0")), sysctl(t, h.host, proxyNDPPath("pxbr0")), sysctl(t, h.host, proxyDelayPath("pxbr0")); arp != "1" || ndp != "1" || delay != "0" {
		t.Fatalf("proxy_arp %s, proxy_ndp %s, proxy_delay %s on the bridge, want 1, 1 and 0", arp, ndp, delay)
	}
	if got := proxyEntries(t, h.host, "pxbr0"); !reflect.DeepEqual(got, []string{"fd00:61::5"}) {
		t.Fatalf("proxy neighbours on the bridge: %v", got)
	}
	brMAC := mac(t, h.host, "pxbr0")
	// The announcement redirects the neighbour's stale entries to the bridge.
	waitNeighbour(t, h.neighbour, "pxnb0", h.moved, brMAC)

	// A neighbour that has no entry resolves the addresses to the host and
	// reaches the pod through it.
	for _, ip := range h.moved {
		delNeighbour(t, h.neighbour, "pxnb0", ip)
	}
	if got := pingAll(t, h.neighbour, h.moved, 5*time.Second); len(got) != len(h.moved) {
		t.Fatalf("only %v of %v answered through the host", got, h.moved)
	}
	waitNeighbour(t, h.neighbour, "pxnb0", h.moved, brMAC)

	// Again: everything is already in place, nothing is reported.
	first := c
	run()
	if !reflect.DeepEqual(c, HostChanges{Bridge: "pxbr0"}) {
		t.Fatalf("second ProxyNeighbours reported %+v", c)
	}

	for range 2 { // idempotent
		must(t, h.host.Do(func(ns.NetNS) error { return UndoHostChanges(first, false, false) }))
		if arp, ndp, delay := sysctl(t, h.host, proxyARPPath("pxbr0")), sysctl(t, h.host, proxyNDPPath("pxbr0")), sysctl(t, h.host, proxyDelayPath("pxbr0")); arp != "0" || ndp != "0" || delay != "80" {
			t.Fatalf("after UndoHostChanges: proxy_arp %s, proxy_ndp %s, proxy_delay %s, want 0, 0 and 80", arp, ndp, delay)
		}
		if got := proxyEntries(t, h.host, "pxbr0"); len(got) > 0 {
			t.Fatalf("proxy neighbours left after UndoHostChanges: %v", got)
		}
	}
}

// TestUndoHostChanges: ProxyNeighbours reports only what it changed and
// UndoHostChanges undoes only that, keeping the sysctls other switches need.
func TestUndoHostChanges(t *testing.T) {
	moved := parseIPs("10.63.0.5", "fd00:63::5")
	for _, tc := range []struct {
		name             string
		already          bool // proxy_arp, proxy_ndp and the proxy entry were there before
		keepARP, keepNDP bool
		want             HostChanges
		wantARP, wantNDP string // after UndoHostChanges
		wantDelay        string
		wantEntries      []string
	}{
		{name: "undo all", want: HostChanges{Bridge: "ubr0", ProxyARP: true, ProxyNDP: true, ProxyNeigh: []string{"fd00:63::5"}, ProxyDelay: "80"},
			wantARP: "0", wantNDP: "0", wantDelay: "80"},
		{name: "keep ARP", keepARP: true, want: HostChanges{Bridge: "ubr0", ProxyARP: true, ProxyNDP: true, ProxyNeigh: []string{"fd00:63::5"}, ProxyDelay: "80"},
			wantARP: "1", wantNDP: "0", wantDelay: "0"},
		{name: "keep both", keepARP: true, keepNDP: true, want: HostChanges{Bridge: "ubr0", ProxyARP: true, ProxyNDP: true, ProxyNeigh: []string{"fd00:63::5"}, ProxyDelay: "80"},
			wantARP: "1", wantNDP: "1", wantDelay: "0"},
		{name: "not ours", already: true, want: HostChanges{Bridge: "ubr0"},
			wantARP: "1", wantNDP: "1", wantDelay: "0", wantEntries: []string{"fd00:63::5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := newNetNS(t)
			vethPair(t, host, "uport0", host, "uport1")
			addBridge(t, host, "ubr0", "uport0")
			addAddrs(t, host, "ubr0", false, "10.63.0.1/24", "fd00:63::1/64")
			vethPair(t, host, "urt0", host, "urt1")
			addAddrs(t, host, "urt0", false, "10.64.0.1/24", "fd00:64::1/64")
			addRoute(t, host, "10.63.0.5/32", "10.64.0.2")
			addRoute(t, host, "fd00:63::5/128", "fd00:64::2")
			if tc.already {
				setSysctl(t, host, proxyDelayPath("ubr0"), "0")
				setSysctl(t, host, proxyARPPath("ubr0"), "1")
				setSysctl(t, host, proxyNDPPath("ubr0"), "1")
				must(t, host.Do(func(ns.NetNS) error {
					br, err := netlinksafe.LinkByName("ubr0")
					if err != nil {
						return err
					}
					_, err = addProxyEntries(br.Attrs().Index, moved[1:])
					return err
				}))
			}
			var c HostChanges
			must(t, host.Do(func(ns.NetNS) (err error) {
				c, err = ProxyNeighbours("ubr0", moved)
				return err
			}))
			if !reflect.DeepEqual(c, tc.want) {
				t.Fatalf("ProxyNeighbours reported %+v, want %+v", c, tc.want)
			}
			must(t, host.Do(func(ns.NetNS) error { return UndoHostChanges(c, tc.keepARP, tc.keepNDP) }))
			if arp, ndp := sysctl(t, host, proxyARPPath("ubr0")), sysctl(t, host, proxyNDPPath("ubr0")); arp != tc.wantARP || ndp != tc.wantNDP {
				t.Fatalf("after UndoHostChanges: proxy_arp %s, proxy_ndp %s, want %s and %s", arp, ndp, tc.wantARP, tc.wantNDP)
			}
			if delay := sysctl(t, host, proxyDelayPath("ubr0")); delay != tc.wantDelay {
				t.Fatalf("after UndoHostChanges: proxy_delay %s, want %s", delay, tc.wantDelay)
			}
			if got := proxyEntries(t, host, "ubr0"); !reflect.DeepEqual(got, tc.wantEntries) {
				t.Fatalf("proxy neighbours after UndoHostChanges: %v, want %v", got, tc.wantEntries)
			}
		})
	}

	t.Run("nothing moved", func(t *testing.T) {
		host := newNetNS(t)
		vethPair(t, host, "uport0", host, "uport1")
		addBridge(t, host, "ubr0", "uport0")
		addAddrs(t, host, "ubr0", false, "10.63.0.1/24", "fd00:63::1/64")
		var c HostChanges
		must(t, host.Do(func(ns.NetNS) (err error) {
			c, err = ProxyNeighbours("ubr0", moved) // still routed through the bridge
			return err
		}))
		if !reflect.DeepEqual(c, HostChanges{Bridge: "ubr0"}) {
			t.Fatalf("ProxyNeighbours reported %+v for addresses on the bridge", c)
		}
		if arp, ndp := sysctl(t, host, proxyARPPath("ubr0")), sysctl(t, host, proxyNDPPath("ubr0")); arp != "0" || ndp != "0" {
			t.Fatalf("proxy_arp %s, proxy_ndp %s, want 0 and 0", arp, ndp)
		}
	})

	t.Run("bridge gone", func(t *testing.T) {
		host := newNetNS(t)
		must(t, host.Do(func(ns.NetNS) error {
			return UndoHostChanges(HostChanges{Bridge: "ubr0", ProxyARP: true, ProxyNDP: true, ProxyNeigh: []string{"fd00:63::5"}}, false, false)
		}))
		must(t, host.Do(func(ns.NetNS) error {
			if _, err := ProxyNeighbours("ubr0", moved); err == nil {
				return errors.New("ProxyNeighbours on a missing bridge succeeded")
			}
			return nil
		}))
	})
}

// TestWaitSettled: WaitSettled returns once duplicate address detection is
// done, and fails when it failed or takes too long.
func TestWaitSettled(t *testing.T) {
	pod := newNetNS(t)
	// ws0 and ws1 are one link, both ends in the pod namespace.
	vethPair(t, pod, "ws0", pod, "ws1")
	x := net.ParseIP("fd00:88::5")
	addAddrs(t, pod, "ws0", true, "fd00:88::5/64")
	if f := addrFlags(t, pod, "ws0", x); f&unix.IFA_F_TENTATIVE == 0 {
		t.Fatalf("%s is not tentative right after it was added (flags %#x)", x, f)
	}
	must(t, WaitSettled(pod.Path(), "ws0", 10*time.Second))
	if f := addrFlags(t, pod, "ws0", x); f&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
		t.Fatalf("%s still tentative after WaitSettled (flags %#x)", x, f)
	}
	// Also the link-local addresses of both ends.
	must(t, pod.Do(func(ns.NetNS) error { return HostWaitSettled([]string{"ws0", "ws1", "nosuchlink"}, 10*time.Second) }))

	// The other end holds y: the second copy fails detection.
	addAddrs(t, pod, "ws1", false, "fd00:88::7/64")
	addAddrs(t, pod, "ws0", true, "fd00:88::7/64")
	err := WaitSettled(pod.Path(), "ws0", 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "failed duplicate address detection") {
		t.Fatalf("WaitSettled with a duplicate address: %v", err)
	}

	// Without carrier detection does not even start.
	vethPair(t, pod, "wsdown0", pod, "wsdown1")
	must(t, pod.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("wsdown1")
		if err != nil {
			return err
		}
		return netlink.LinkSetDown(l)
	}))
	addAddrs(t, pod, "wsdown0", true, "fd00:89::5/64")
	err = WaitSettled(pod.Path(), "wsdown0", 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "still tentative") {
		t.Fatalf("WaitSettled on a link without carrier: %v", err)
	}
	err = pod.Do(func(ns.NetNS) error { return HostWaitSettled([]string{"wsdown0"}, 50*time.Millisecond) })
	if err == nil || !strings.Contains(err.Error(), "still tentative") {
		t.Fatalf("HostWaitSettled on a link without carrier: %v", err)
	}

	if err := WaitSettled(pod.Path(), "nosuchlink", time.Second); err == nil {
		t.Fatal("WaitSettled on a missing link succeeded")
	}
}

// TestDisableDAD: interfaces created with DADOff written take an address that
// another interface on their link holds without detection failing it, those
// created before still run detection, and restore puts the default back.
func TestDisableDAD(t *testing.T) {
	pod := newNetNS(t)
	const dflt = "/proc/sys/net/ipv6/conf/default/accept_dad"
	before := sysctl(t, pod, dflt)
	if before == "0" {
		t.Fatalf("%s is 0 in a new namespace: the test proves nothing", dflt)
	}
	vethPair(t, pod, "ddold0", pod, "ddold1")

	on, err := DADOn(pod.Path())
	must(t, err)
	must(t, SetSysctls(pod.Path(), DADOff(on)))
	restore := func() error { return SetSysctls(pod.Path(), on) }
	if v := sysctl(t, pod, dflt); v != "0" {
		t.Fatalf("default accept_dad %s after DisableDAD", v)
	}
	vethPair(t, pod, "ddnew0", pod, "ddnew1")
	if old, nu := sysctl(t, pod, "/proc/sys/net/ipv6/conf/ddold0/accept_dad"), sysctl(t, pod, "/proc/sys/net/ipv6/conf/ddnew0/accept_dad"); old != before || nu != "0" {
		t.Fatalf("accept_dad %s on a link created before DisableDAD, %s on one created after; want %s and 0", old, nu, before)
	}
	// The other end of each link holds the address first, as the old
	// interface does during a switch.
	addAddrs(t, pod, "ddnew1", false, "fd00:90::5/64")
	addAddrs(t, pod, "ddnew0", true, "fd00:90::5/64")
	addAddrs(t, pod, "ddold1", false, "fd00:91::5/64")
	addAddrs(t, pod, "ddold0", true, "fd00:91::5/64")
	// Detection takes a second at least: settling much sooner means none ran.
	must(t, WaitSettled(pod.Path(), "ddnew0", 300*time.Millisecond))
	if err := WaitSettled(pod.Path(), "ddold0", 10*time.Second); err == nil || !strings.Contains(err.Error(), "failed duplicate address detection") {
		t.Fatalf("the copy on a link created before DisableDAD did not fail detection: %v", err)
	}
	if f := addrFlags(t, pod, "ddnew0", net.ParseIP("fd00:90::5")); f&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
		t.Fatalf("the copy on a link created after DisableDAD has flags %#x", f)
	}

	must(t, restore())
	if v := sysctl(t, pod, dflt); v != before {
		t.Fatalf("default accept_dad %s after restore, want %s", v, before)
	}

	t.Run("already off", func(t *testing.T) {
		pod := newNetNS(t)
		setSysctl(t, pod, dflt, "0")
		on, err := DADOn(pod.Path())
		must(t, err)
		must(t, SetSysctls(pod.Path(), DADOff(on)))
		setSysctl(t, pod, dflt, "2") // restore must not touch what it did not change
		must(t, SetSysctls(pod.Path(), on))
		if v := sysctl(t, pod, dflt); v != "2" {
			t.Fatalf("restore changed accept_dad it had not changed: %s", v)
		}
	})

	t.Run("namespace gone", func(t *testing.T) {
		n, err := testutils.NewNS()
		must(t, err)
		on, err := DADOn(n.Path())
		must(t, err)
		must(t, n.Close())
		must(t, testutils.UnmountNS(n))
		must(t, SetSysctls(n.Path(), on))
	})
}
