package handover

import (
	"encoding/binary"
	"fmt"
	"net"

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
		l, err := netlink.LinkByName(link)
		if err != nil {
			return fmt.Errorf("interface %s: %w", link, err)
		}
		return announce(l.Attrs().Index, l.Attrs().HardwareAddr, ips)
	})
}

// AnnounceVia sends the same gratuitous ARP from a host-side link (for
// example A's bridge, answering for X with the host's MAC) in the current
// namespace.
func AnnounceVia(link string, ips []net.IP) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("interface %s: %w", link, err)
	}
	return announce(l.Attrs().Index, l.Attrs().HardwareAddr, ips)
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
