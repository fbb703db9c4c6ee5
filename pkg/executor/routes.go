package executor

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/rewire-cni/rewire/pkg/attachment"
)

// ApplyDefaultRoute gives the default route to the attachment whose
// selection asked for it (default-route): inside the pod netns it removes the
// default routes of that gateway's address family from every other interface
// and adds "default via gw dev ifname". Without such a request nothing changes
// and the netns is not entered.
func ApplyDefaultRoute(netns string, specs []attachment.Spec) error {
	var owner *attachment.Spec
	for i := range specs {
		if len(specs[i].DefaultRoute) > 0 {
			owner = &specs[i]
		}
	}
	if owner == nil {
		return nil
	}
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(owner.IfName)
		if err != nil {
			return fmt.Errorf("interface %s: %w", owner.IfName, err)
		}
		for _, g := range owner.DefaultRoute {
			if err := setDefault(link, net.ParseIP(g)); err != nil {
				return err
			}
		}
		return nil
	})
}

func setDefault(link netlink.Link, gw net.IP) error {
	family := netlink.FAMILY_V4
	if gw.To4() == nil {
		family = netlink.FAMILY_V6
	}
	routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask) {
			if err := netlink.RouteDel(&r); err != nil {
				return fmt.Errorf("removing default route via %v: %w", r.Gw, err)
			}
		}
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("adding default route via %s dev %s: %w", gw, link.Attrs().Name, err)
	}
	return nil
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
