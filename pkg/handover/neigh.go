package handover

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SeedNeighbours gives the pod and the host each other's link-layer address
// on the new primary before the cut-over, so that the first packets after
// it need no neighbour resolution. Without it, the pod's first Neighbour
// Solicitation for its new gateway can go unanswered (seen when the host
// side's addresses had just been made, on a loaded node), and IPv6 traffic
// stops for the kernel's retransmit time (1 s) although both ends are up.
//
// In the pod (netns), each gateway of link's routes that is an address of
// one of the host links hostLinks (the new network's host side: a ptp veth,
// a bridge) gets that host link's MAC. On the host, each of ips gets link's
// MAC on every link of hostLinks holding an address of its family (the
// links the host routes it through). Entries are STALE: the kernel uses
// them at once and confirms them itself. Runs in the host namespace.
func SeedNeighbours(netns, link string, ips []net.IP, hostLinks []string) error {
	var podMAC net.HardwareAddr
	var podIndex int
	var gateways []net.IP
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return fmt.Errorf("interface %s: %w", link, err)
		}
		podMAC, podIndex = l.Attrs().HardwareAddr, l.Attrs().Index
		gateways, err = gatewaysVia(l.Attrs().Index)
		return err
	})
	if err != nil || len(podMAC) != 6 {
		return err
	}
	var seeds []neighbour
	var errs []error
	for _, name := range hostLinks {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			continue // gone, or not a host link
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: listing addresses: %w", name, err))
			continue
		}
		for _, gw := range gateways {
			if holds(addrs, gw) && len(l.Attrs().HardwareAddr) == 6 {
				seeds = append(seeds, neighbour{index: podIndex, ip: gw, mac: l.Attrs().HardwareAddr})
			}
		}
		for _, ip := range ips {
			if holdsFamily(addrs, ip) {
				errs = append(errs, setStale(neighbour{index: l.Attrs().Index, ip: ip, mac: podMAC}))
			}
		}
	}
	errs = append(errs, ns.WithNetNSPath(netns, func(ns.NetNS) error {
		var errs []error
		for _, s := range seeds {
			errs = append(errs, setStale(s))
		}
		return errors.Join(errs...)
	}))
	return errors.Join(errs...)
}

type neighbour struct {
	index int
	ip    net.IP
	mac   net.HardwareAddr
}

// setStale sets a STALE neighbour entry in the current namespace.
func setStale(n neighbour) error {
	fam := netlink.FAMILY_V6
	if n.ip.To4() != nil {
		fam = netlink.FAMILY_V4
	}
	err := netlink.NeighSet(&netlink.Neigh{LinkIndex: n.index, Family: fam, State: unix.NUD_STALE, IP: n.ip, HardwareAddr: n.mac})
	if err != nil {
		return fmt.Errorf("neighbour %s on link %d: %w", n.ip, n.index, err)
	}
	return nil
}

// gatewaysVia returns the gateways of the main table's routes through the
// link with the given index, in the current namespace.
func gatewaysVia(index int) ([]net.IP, error) {
	var out []net.IP
	for _, fam := range families {
		routes, err := linkRoutes(index, fam, unix.RT_TABLE_MAIN)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			if r.Gw != nil && !holdsIP(out, r.Gw) {
				out = append(out, r.Gw)
			}
		}
	}
	return out, nil
}

func holds(addrs []netlink.Addr, ip net.IP) bool {
	return slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(ip) })
}

func holdsFamily(addrs []netlink.Addr, ip net.IP) bool {
	for _, a := range addrs {
		if (a.IP.To4() != nil) == (ip.To4() != nil) && !a.IP.IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

func holdsIP(ips []net.IP, ip net.IP) bool {
	return slices.ContainsFunc(ips, func(x net.IP) bool { return x.Equal(ip) })
}
