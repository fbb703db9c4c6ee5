package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Announce tells the L2 neighbours of link (a macvlan or bridge network)
// that ips now live at the link's MAC, so that they update their caches at
// once: one gratuitous ARP request for each IPv4 address and one unsolicited
// Neighbour Advertisement for each IPv6 address (see unsolicitedNA). Routed
// networks (ptp) do not need it and it does no harm there. Links without a
// MAC (no ARP, no NDP) are skipped.
func Announce(netns, link string, ips []net.IP) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return fmt.Errorf("interface %s: %w", link, err)
		}
		return announce(l.Attrs(), ips)
	})
}

// announce sends the gratuitous ARPs and unsolicited Neighbour
// Advertisements for ips from the link a in the current namespace.
func announce(a *netlink.LinkAttrs, ips []net.IP) error {
	if len(a.HardwareAddr) != 6 {
		return nil
	}
	var v4, v6 []net.IP
	for _, ip := range ips {
		switch {
		case ip.To4() != nil:
			v4 = append(v4, ip.To4())
		case len(ip) == net.IPv6len:
			v6 = append(v6, ip)
		}
	}
	return errors.Join(gratuitousARP(a.Index, a.HardwareAddr, v4), unsolicitedNA(a, v6))
}

// gratuitousARP sends one gratuitous ARP request for each IPv4 address in
// ips from the link with the given index and MAC.
func gratuitousARP(index int, mac net.HardwareAddr, ips []net.IP) error {
	if len(ips) == 0 {
		return nil
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("gratuitous ARP socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: index, Halen: 6}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	for _, ip := range ips {
		if err := unix.Sendto(fd, garp(mac, ip), 0, to); err != nil {
			return fmt.Errorf("gratuitous ARP for %s: %w", ip, err)
		}
	}
	return nil
}

// garp is an ARP request whose sender and target are both ip (RFC 5227 §3).
func garp(mac net.HardwareAddr, ip net.IP) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	copy(p[8:], mac)
	copy(p[14:], ip)
	copy(p[24:], ip) // target MAC stays zero
	return p
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ProxyNeighbours keeps the L2 neighbours of a host bridge reaching ips
// after the pod left that bridge for a routed network. For the addresses the
// host now routes through another interface it enables proxy ARP (IPv4) and
// proxy NDP (IPv6) on the bridge, adds a proxy neighbour entry on the bridge
// for each moved IPv6 address (Linux proxy NDP answers only for addresses
// that have one), and then announces the moved addresses with the bridge's
// MAC (gratuitous ARP, unsolicited Neighbour Advertisement) so that the
// neighbours send through the host at once. Proxy ARP replies go out
// without the kernel's random delay (proxy_delay 0). The host must forward IPv6 for
// proxy NDP to answer (net.ipv6.conf.<bridge>.forwarding), as it must to
// route the pod at all.
//
// It returns what it changed, also on error, for UndoHostChanges: only a
// sysctl it turned on and proxy entries it added, not what was already
// there, so calling it again after a crash reports nothing the first call
// did. Runs in the current (host) namespace.
func ProxyNeighbours(bridge string, ips []net.IP) (HostChanges, error) {
	c := HostChanges{Bridge: bridge}
	br, err := netlinksafe.LinkByName(bridge)
	if err != nil {
		return c, fmt.Errorf("bridge %s: %w", bridge, err)
	}
	var v4, v6 []net.IP
	for _, ip := range ips {
		routes, err := netlink.RouteGet(ip)
		if err != nil || len(routes) == 0 || routes[0].LinkIndex == br.Attrs().Index {
			continue
		}
		if ip.To4() != nil {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	if len(v4) > 0 {
		on, err := turnOn(proxyARPPath(bridge))
		c.ProxyARP = on
		if err != nil {
			return c, fmt.Errorf("enabling proxy ARP on %s: %w", bridge, err)
		}
		if c.ProxyDelay, err = noProxyDelay(bridge); err != nil {
			return c, fmt.Errorf("proxy ARP without delay on %s: %w", bridge, err)
		}
	}
	if len(v6) > 0 {
		on, err := turnOn(proxyNDPPath(bridge))
		c.ProxyNDP = on
		if err != nil {
			return c, fmt.Errorf("enabling proxy NDP on %s: %w", bridge, err)
		}
		added, err := addProxyEntries(br.Attrs().Index, v6)
		c.ProxyNeigh = added
		if err != nil {
			return c, fmt.Errorf("bridge %s: %w", bridge, err)
		}
	}
	return c, announce(br.Attrs(), append(v4, v6...))
}

// BridgesHolding returns the host bridges with an address whose subnet
// holds one of ips (a bridge the host routes that subnet to), in the
// current (host) namespace.
func BridgesHolding(ips []net.IP) ([]string, error) {
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	var out []string
	seen := map[int]bool{}
	for _, a := range addrs {
		ones, bits := a.Mask.Size()
		if seen[a.LinkIndex] || ones == bits || a.IP.IsLinkLocalUnicast() || !slices.ContainsFunc(ips, a.IPNet.Contains) {
			continue
		}
		seen[a.LinkIndex] = true
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err == nil && l.Type() == "bridge" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}
