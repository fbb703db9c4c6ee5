package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Announce sends one gratuitous ARP request for each IPv4 address in ips
// from link, so that L2 neighbours (a macvlan or bridge network) update their
// caches to the link's MAC at once. Routed networks (ptp) do not need it and
// it does no harm there. Links without a MAC (no ARP) are skipped.
func Announce(netns, link string, ips []net.IP) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return fmt.Errorf("interface %s: %w", link, err)
		}
		return announce(l.Attrs().Index, l.Attrs().HardwareAddr, ips)
	})
}

func announce(index int, mac net.HardwareAddr, ips []net.IP) error {
	if len(mac) != 6 {
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
		ip4 := ip.To4()
		if ip4 == nil {
			continue
		}
		if err := unix.Sendto(fd, garp(mac, ip4), 0, to); err != nil {
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
// after the pod left that bridge for a routed network: when the host now
// routes the addresses through another interface, proxy ARP is enabled on
// the bridge and a gratuitous ARP with the bridge's MAC tells the neighbours
// to send through the host. It reports whether it did so. Runs in the
// current (host) namespace.
func ProxyNeighbours(bridge string, ips []net.IP) (bool, error) {
	br, err := netlinksafe.LinkByName(bridge)
	if err != nil {
		return false, fmt.Errorf("bridge %s: %w", bridge, err)
	}
	var moved []net.IP
	for _, ip := range ips {
		routes, err := netlink.RouteGet(ip)
		if err == nil && len(routes) > 0 && routes[0].LinkIndex != br.Attrs().Index && ip.To4() != nil {
			moved = append(moved, ip)
		}
	}
	if len(moved) == 0 {
		return false, nil
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+bridge+"/proxy_arp", []byte("1"), 0o644); err != nil {
		return false, fmt.Errorf("enabling proxy ARP on %s: %w", bridge, err)
	}
	return true, announce(br.Attrs().Index, br.Attrs().HardwareAddr, moved)
}

// WithdrawHostRoutes removes the host routes to exactly the given addresses
// ("X/32 dev veth", as routed networks add) except those through the links
// in keep, the new owner's, so that inbound traffic follows the new owner's
// route before the old link is deleted: a link being deleted drops what is
// sent to it for as long as the kernel takes to close it. Runs in the
// current (host) namespace.
func WithdrawHostRoutes(ips []net.IP, keep []string) error {
	kept := map[int]bool{}
	for _, name := range keep {
		if l, err := netlinksafe.LinkByName(name); err == nil {
			kept[l.Attrs().Index] = true
		}
	}
	var errs []error
	for _, ip := range ips {
		bits := 128
		if ip.To4() != nil {
			bits = 32
		}
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{
			Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)},
		}, netlink.RT_FILTER_DST)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i := range routes {
			if kept[routes[i].LinkIndex] {
				continue
			}
			if err := netlink.RouteDel(&routes[i]); err != nil && !missing(err) {
				errs = append(errs, fmt.Errorf("withdrawing host route %s: %w", routes[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
