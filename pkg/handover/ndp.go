package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HostChanges are the host-side changes a switch made for one bridge, kept in the sandbox record and undone by Undo when nothing needs them.
type HostChanges struct {
	Bridge     string   `json:"bridge"`
	ProxyARP   bool     `json:"proxyARP,omitempty"`   // we turned proxy_arp on (it was off)
	ProxyNDP   bool     `json:"proxyNDP,omitempty"`   // we turned proxy_ndp on (it was off)
	ProxyNeigh []string `json:"proxyNeigh,omitempty"` // IPv6 proxy entries we added
	// ProxyDelay is the bridge's neigh proxy_delay before we set it to 0
	// ("": we did not change it).
	ProxyDelay string `json:"proxyDelay,omitempty"`
}

// UndoHostChanges undoes what ProxyNeighbours reported: the proxy neighbour
// entries it added go (entries already gone are fine), and proxy ARP / proxy
// NDP are turned off again where it turned them on, unless the caller keeps
// them (keepARP, keepNDP) because another switch on the same bridge still
// needs them. A bridge that no longer exists has nothing to undo. Runs in
// the current (host) namespace.
func UndoHostChanges(c HostChanges, keepARP, keepNDP bool) error {
	br, err := netlinksafe.LinkByName(c.Bridge)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil
		}
		return fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	var errs []error
	for _, s := range c.ProxyNeigh {
		ip := net.ParseIP(s)
		if ip == nil {
			errs = append(errs, fmt.Errorf("bridge %s: proxy neighbour %q is not an address", c.Bridge, s))
			continue
		}
		err := netlink.NeighDel(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: ip})
		if err != nil && !missing(err) {
			errs = append(errs, fmt.Errorf("removing proxy neighbour %s on %s: %w", s, c.Bridge, err))
		}
	}
	if c.ProxyARP && !keepARP {
		if err := turnOff(proxyARPPath(c.Bridge)); err != nil {
			errs = append(errs, fmt.Errorf("disabling proxy ARP on %s: %w", c.Bridge, err))
		}
	}
	if c.ProxyDelay != "" && !keepARP {
		if err := restore(proxyDelayPath(c.Bridge), c.ProxyDelay); err != nil {
			errs = append(errs, fmt.Errorf("restoring proxy_delay on %s: %w", c.Bridge, err))
		}
	}
	if c.ProxyNDP && !keepNDP {
		if err := turnOff(proxyNDPPath(c.Bridge)); err != nil {
			errs = append(errs, fmt.Errorf("disabling proxy NDP on %s: %w", c.Bridge, err))
		}
	}
	return errors.Join(errs...)
}

func proxyARPPath(link string) string { return "/proc/sys/net/ipv4/conf/" + link + "/proxy_arp" }
func proxyNDPPath(link string) string { return "/proc/sys/net/ipv6/conf/" + link + "/proxy_ndp" }
func proxyDelayPath(link string) string {
	return "/proc/sys/net/ipv4/neigh/" + link + "/proxy_delay"
}

// noProxyDelay sets a link's proxy_delay to 0 and returns its value before
// ("": it was 0). The kernel delays each proxy ARP reply by a random time up
// to proxy_delay (default 0.8 s), and packets queued behind the unresolved
// neighbour meanwhile overflow its queue.
func noProxyDelay(link string) (string, error) {
	v, err := readSysctl(proxyDelayPath(link))
	if err != nil || v == "0" {
		return "", err
	}
	return v, os.WriteFile(proxyDelayPath(link), []byte("0"), 0o644)
}

// restore sets a sysctl back to v; one that no longer exists is fine.
func restore(path, v string) error {
	err := os.WriteFile(path, []byte(v), 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// addProxyEntries adds a proxy neighbour entry on the link for each address
// in ips that has none and returns the addresses it added. The kernel
// replaces an existing proxy entry silently, so the existing ones are looked
// up first: they are not ours to report.
func addProxyEntries(index int, ips []net.IP) ([]string, error) {
	have := map[string]bool{}
	var entries []netlink.Neigh
	err := retryDump(func() (err error) {
		entries, err = netlink.NeighProxyList(index, netlink.FAMILY_V6)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing proxy neighbours: %w", err)
	}
	for _, e := range entries {
		if e.LinkIndex == index && e.Flags&netlink.NTF_PROXY != 0 {
			have[e.IP.String()] = true
		}
	}
	var added []string
	for _, ip := range ips {
		if have[ip.String()] {
			continue
		}
		err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: index, Family: netlink.FAMILY_V6, Flags: netlink.NTF_PROXY, IP: ip})
		if err != nil {
			return added, fmt.Errorf("adding proxy neighbour %s: %w", ip, err)
		}
		have[ip.String()] = true
		added = append(added, ip.String())
	}
	return added, nil
}

// retryDump calls a netlink dump again while the kernel reports that the
// dump was interrupted by a change (as netlinksafe does for the dumps it
// wraps).
func retryDump(dump func() error) error {
	for range 10 {
		if err := dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return dump()
}

// turnOn sets a boolean sysctl to 1 and reports whether it was 0 before,
// that is whether this call turned it on.
func turnOn(path string) (bool, error) {
	v, err := readSysctl(path)
	if err != nil {
		return false, err
	}
	if v != "0" {
		return false, nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// turnOff sets a sysctl to 0; a sysctl that does not exist (its link is
// gone) is fine.
func turnOff(path string) error { return restore(path, "0") }

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}

// allNodes is ff02::1, the destination of unsolicited Neighbour
// Advertisements.
var allNodes = [16]byte{0xff, 0x02, 15: 0x01}

// unsolicitedNA sends one unsolicited Neighbour Advertisement (RFC 4861
// §7.2.6) for each IPv6 address in ips from the link a, whose MAC must have
// 6 bytes: to all nodes, Override set so that neighbours replace the MAC they
// have for the address, Solicited clear.
//
// The packet goes out from a raw ICMPv6 socket bound to the link and to the
// address itself (the kernel fills in the checksum) with a hop limit of 255,
// which receivers require. The address may be tentative (the kernel refuses
// to bind to a tentative address) or not local at all (a host proxying it),
// so the socket is made free-binding.
func unsolicitedNA(a *netlink.LinkAttrs, ips []net.IP) error {
	var errs []error
	for _, ip := range ips {
		if err := sendNA(a, ip); err != nil {
			errs = append(errs, fmt.Errorf("unsolicited neighbour advertisement for %s on %s: %w", ip, a.Name, err))
		}
	}
	return errors.Join(errs...)
}

func sendNA(a *netlink.LinkAttrs, ip net.IP) error {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.BindToDevice(fd, a.Name); err != nil {
		return fmt.Errorf("binding to device: %w", err)
	}
	for _, o := range []struct {
		name       string
		opt, value int
	}{
		{"IPV6_MULTICAST_HOPS", unix.IPV6_MULTICAST_HOPS, 255},
		{"IPV6_UNICAST_HOPS", unix.IPV6_UNICAST_HOPS, 255},
		// Not to ourselves: the host's own stack has nothing to learn.
		{"IPV6_MULTICAST_LOOP", unix.IPV6_MULTICAST_LOOP, 0},
	} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o.opt, o.value); err != nil {
			return fmt.Errorf("setting %s: %w", o.name, err)
		}
	}
	if err := freeBind(fd); err != nil {
		return err
	}
	src := &unix.SockaddrInet6{}
	copy(src.Addr[:], ip.To16())
	if ip.IsLinkLocalUnicast() {
		src.ZoneId = uint32(a.Index)
	}
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("binding to %s: %w", ip, err)
	}
	to := &unix.SockaddrInet6{Addr: allNodes, ZoneId: uint32(a.Index)}
	if err := unix.Sendto(fd, neighbourAdvert(a.HardwareAddr, ip), 0, to); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	return nil
}

// freeBind lets an IPv6 socket bind to an address that is tentative or not
// local. IPV6_FREEBIND exists since Linux 4.15; before, IPV6_TRANSPARENT has
// the same effect on bind (it needs CAP_NET_ADMIN, which a raw socket's user
// has anyway). IP_FREEBIND is no alternative: the kernel refuses SOL_IP
// options on raw IPv6 sockets.
func freeBind(fd int) error {
	err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	if errors.Is(err, unix.ENOPROTOOPT) {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1)
	}
	if err != nil {
		return fmt.Errorf("allowing a non-local source address: %w", err)
	}
	return nil
}

// neighbourAdvert is an unsolicited Neighbour Advertisement for target with
// the Target Link-Layer Address option (RFC 4861 §4.4); the checksum is
// left to the kernel.
func neighbourAdvert(mac net.HardwareAddr, target net.IP) []byte {
	p := make([]byte, 32)
	p[0] = 136                               // Neighbour Advertisement, code 0
	binary.BigEndian.PutUint32(p[4:], 1<<29) // Override; Router and Solicited clear
	copy(p[8:24], target.To16())             // target address
	p[24], p[25] = 2, 1                      // Target Link-Layer Address, 8 bytes
	copy(p[26:32], mac)
	return p
}

// settleTick is how often the address flags are polled while waiting for
// duplicate address detection.
const settleTick = 5 * time.Millisecond

// WaitSettled waits until no IPv6 address of link in netns is tentative, that
// is until duplicate address detection has finished, so that the addresses
// can be used as source addresses. It fails when detection failed (another
// node holds an address) or timeout passes first; addresses stay tentative
// while the link is down or has no carrier.
func WaitSettled(netns, link string, timeout time.Duration) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		return waitSettled([]string{link}, timeout, false)
	})
}

// HostWaitSettled is WaitSettled for host-side links in the current (host)
// namespace; links that do not exist are skipped.
func HostWaitSettled(links []string, timeout time.Duration) error {
	return waitSettled(links, timeout, true)
}

func waitSettled(links []string, timeout time.Duration, skipMissing bool) error {
	deadline := time.Now().Add(timeout)
	for {
		pending, err := tentative(links, skipMissing)
		if err != nil || pending == "" {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still tentative after %s (duplicate address detection)", pending, timeout)
		}
		time.Sleep(settleTick)
	}
}

// tentative returns the first tentative IPv6 address of the links ("addr on
// link"), or "" when there is none, and fails on an address whose duplicate
// address detection failed.
func tentative(links []string, skipMissing bool) (string, error) {
	for _, name := range links {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			if skipMissing && errors.As(err, &netlink.LinkNotFoundError{}) {
				continue
			}
			return "", fmt.Errorf("interface %s: %w", name, err)
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return "", fmt.Errorf("interface %s: listing addresses: %w", name, err)
		}
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return "", fmt.Errorf("address %s on %s failed duplicate address detection", a.IP, name)
			}
		}
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				return fmt.Sprintf("address %s on %s", a.IP, name), nil
			}
		}
	}
	return "", nil
}

// SkipDAD ends duplicate address detection at once for the tentative IPv6
// addresses of host links that lead to one pod only (a routed network's
// veth: the only other node on it is the pod, which Rewire configured), by
// adding each again with IFA_F_NODAD, and turns detection off on them for
// later addresses. A link that is gone is skipped. Runs in the host
// namespace.
func SkipDAD(links []string) error {
	var errs []error
	for _, name := range links {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			continue
		}
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/accept_dad", []byte("0"), 0o644)
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: listing addresses: %w", name, err))
			continue
		}
		for i := range addrs {
			a := addrs[i]
			if a.Flags&unix.IFA_F_TENTATIVE == 0 {
				continue
			}
			if err := netlink.AddrDel(l, &a); err != nil && !missing(err) {
				errs = append(errs, fmt.Errorf("interface %s: removing tentative %s: %w", name, a.IP, err))
				continue
			}
			a.Flags = (a.Flags &^ (unix.IFA_F_TENTATIVE | unix.IFA_F_DADFAILED)) | unix.IFA_F_NODAD
			if err := netlink.AddrAdd(l, &a); err != nil {
				errs = append(errs, fmt.Errorf("interface %s: adding %s without DAD: %w", name, a.IP, err))
			}
		}
	}
	return errors.Join(errs...)
}
