// Package handover moves a pod's traffic from one interface to another inside
// the pod's network namespace, the netlink half of a live primary-network
// switch (make-before-break):
//
//	Pin     a side table consulted just before main gets a copy of main,
//	        then the old interface's routes leave main, so main is free for
//	        the new network while every lookup answers as before the switch
//	        (the primary's traffic through the old interface, a secondary's
//	        through its own).
//	Cut     the pin rule goes (one netlink call): lookups fall through to
//	        main, which now holds the new interface's routes.
//	Unpin   (rollback) the old routes go back to main.
//	Rename  the new interface takes the old one's name.
//	Announce gratuitous ARP and unsolicited neighbour advertisements for
//	        the kept addresses from the new interface.
//
// Every function enters the namespace with ns.WithNetNSPath (the OS thread is
// locked) and is idempotent, so a crashed switch can be finished or undone
// by calling the same step again.
package handover

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Table is the routing table holding pinned routes, and RulePriority the
// priority of its rule: just before main (32766), so that the rules of
// secondary networks (source routing) still win as they do without a pin.
const (
	Table        = 7277
	RulePriority = 32765
)

var families = []int{netlink.FAMILY_V4, netlink.FAMILY_V6}

// Pin freezes the pod's routing as it is and frees main of link's routes,
// for each address family that has routes through link: the pin table gets
// a copy of the whole main table (so that a destination main routes through
// a secondary interface keeps that path: only the primary's traffic is
// pinned), the pin rule sends all traffic to it (or, when from is given,
// only traffic from those addresses: a re-addressing switch keeps the old
// address on the old interface while everything else moves), and then
// link's routes leave main for the new network's. The copy and the rule
// exist before anything is removed from main, so no lookup ever misses.
func Pin(netns, link string, from ...net.IP) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return fmt.Errorf("interface %s: %w", link, err)
		}
		for _, fam := range families {
			routes, err := linkRoutes(l.Attrs().Index, fam, unix.RT_TABLE_MAIN)
			if err != nil {
				return err
			}
			if len(routes) == 0 {
				continue
			}
			all, err := linkRoutes(0, fam, unix.RT_TABLE_MAIN)
			if err != nil {
				return err
			}
			if err := copyRoutes(all, Table); err != nil {
				return err
			}
			if err := addRules(fam, from); err != nil {
				return err
			}
			if err := delRoutes(routes); err != nil {
				return err
			}
		}
		return nil
	})
}

// Unpin undoes Pin: the pinned routes go back to main (when their interface
// still exists; the copies of routes main kept are already there), then the
// rule and the table are removed.
func Unpin(netns string) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		for _, fam := range families {
			routes, err := linkRoutes(0, fam, Table)
			if err != nil {
				return err
			}
			if err := copyRoutes(routes, unix.RT_TABLE_MAIN); err != nil {
				return err
			}
		}
		return cut()
	})
}

// Cut removes the pin rule and flushes the pin table: traffic follows main.
func Cut(netns string) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error { return cut() })
}

func cut() error {
	for _, fam := range families {
		rules, err := netlinksafe.RuleList(fam)
		if err != nil {
			return fmt.Errorf("listing rules: %w", err)
		}
		for i := range rules {
			if rules[i].Table != Table {
				continue
			}
			if err := netlink.RuleDel(&rules[i]); err != nil && !missing(err) {
				return fmt.Errorf("removing pin rule: %w", err)
			}
		}
		routes, err := linkRoutes(0, fam, Table)
		if err != nil {
			return err
		}
		if err := delRoutes(routes); err != nil {
			return err
		}
	}
	return nil
}

// Pinned reports whether the pin rule exists (for tests and recovery).
func Pinned(netns string) (bool, error) {
	found := false
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		for _, fam := range families {
			rules, err := netlinksafe.RuleList(fam)
			if err != nil {
				return fmt.Errorf("listing rules: %w", err)
			}
			for _, r := range rules {
				found = found || r.Table == Table
			}
		}
		return nil
	})
	return found, err
}

// Rename gives link "from" the name "to", keeping its routes. It is
// idempotent: done when "from" is gone and "to" exists. It refuses when both
// exist, since "to" would then be someone else's interface.
func Rename(netns, from, to string) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(from)
		_, toErr := netlinksafe.LinkByName(to)
		switch {
		case err != nil && toErr == nil:
			return nil
		case err != nil:
			return fmt.Errorf("interface %s: %w", from, err)
		case toErr == nil:
			return fmt.Errorf("cannot rename %s to %s: %s exists", from, to, to)
		}
		return rename(l, to)
	})
}

// rename renames a link in place where the kernel allows renaming a link
// that is up (Linux 6.2 and later: no packet is lost); older kernels need it
// down, which drops its routes and neighbours for a moment; the routes are
// put back at once.
func rename(l netlink.Link, to string) error {
	err := netlink.LinkSetName(l, to)
	if !errors.Is(err, unix.EBUSY) {
		if err != nil {
			return fmt.Errorf("renaming %s to %s: %w", l.Attrs().Name, to, err)
		}
		return nil
	}
	name := l.Attrs().Name
	routes, err := allRoutes(l.Attrs().Index)
	if err != nil {
		return err
	}
	// Keep IPv6 addresses across the down/up (IPv4 ones always stay).
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/keep_addr_on_down", []byte("1"), 0o644)
	if err := netlink.LinkSetDown(l); err != nil {
		return fmt.Errorf("setting %s down: %w", name, err)
	}
	renameErr := netlink.LinkSetName(l, to)
	if err := netlink.LinkSetUp(l); err != nil {
		return errors.Join(renameErr, fmt.Errorf("setting %s up: %w", to, err))
	}
	if renameErr != nil {
		renameErr = fmt.Errorf("renaming %s to %s: %w", name, to, renameErr)
	}
	return errors.Join(renameErr, restoreRoutes(l.Attrs().Index, routes))
}

func allRoutes(link int) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, fam := range families {
		r, err := linkRoutes(link, fam, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	return out, nil
}

// restoreRoutes makes the routes of a link that went down and up again what
// they were: the kernel dropped them all and re-created the prefix routes of
// its addresses, which the plugin may have replaced (ptp does).
func restoreRoutes(link int, want []netlink.Route) error {
	have, err := allRoutes(link)
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, r := range want {
		wanted[routeKey(r)] = true
	}
	var errs []error
	for i := range have {
		if !wanted[routeKey(have[i])] {
			if err := netlink.RouteDel(&have[i]); err != nil && !missing(err) {
				errs = append(errs, fmt.Errorf("removing route %s: %w", have[i], err))
			}
		}
	}
	sortForAdd(want)
	for i := range want {
		if err := netlink.RouteAdd(&want[i]); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("restoring route %s: %w", want[i], err))
		}
	}
	return errors.Join(errs...)
}

func routeKey(r netlink.Route) string {
	return fmt.Sprintf("%d %v %v %v %d", r.Table, r.Dst, r.Gw, r.Src, r.Priority)
}

// linkRoutes lists the routes of table (0: every table) through link
// (0: every link) of one family, skipping the kernel's IPv6 link-local and
// multicast routes, which every interface has by itself.
func linkRoutes(link, family, table int) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: link, Table: table}
	mask := netlink.RT_FILTER_OIF | netlink.RT_FILTER_TABLE
	if link == 0 {
		mask &^= netlink.RT_FILTER_OIF
	}
	if table == 0 {
		filter.Table = unix.RT_TABLE_UNSPEC
		mask &^= netlink.RT_FILTER_TABLE
	}
	routes, err := netlinksafe.RouteListFiltered(family, filter, mask)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	out := routes[:0]
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL || r.Type != unix.RTN_UNICAST {
			continue
		}
		if r.Dst != nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) && r.Dst.IP.To4() == nil {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// copyRoutes adds routes to table, link-scope ones first so that gateways
// resolve; routes already there are fine.
//
// Routes keep their order: main can hold several routes to one destination
// with one metric (two IPv4 default routes when a secondary's IPAM adds one
// too), and the kernel chooses among them by their order and by which
// gateway answers, so the copy must hold every one of them, in order. A
// route that exists already with another next hop is appended after it; one
// that exists identically is left as it is.
func copyRoutes(routes []netlink.Route, table int) error {
	sortForAdd(routes)
	for i := range routes {
		r := routes[i]
		r.Table = table
		err := netlink.RouteAdd(&r)
		if errors.Is(err, unix.EEXIST) {
			err = netlink.RouteAppend(&r)
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("copying route %s to table %d: %w", r, table, err)
		}
	}
	return nil
}

// delRoutes removes routes, gateway routes first; routes already gone are fine.
func delRoutes(routes []netlink.Route) error {
	sortForAdd(routes)
	for i := len(routes) - 1; i >= 0; i-- {
		if err := netlink.RouteDel(&routes[i]); err != nil && !missing(err) {
			return fmt.Errorf("removing route %s: %w", routes[i], err)
		}
	}
	return nil
}

func sortForAdd(routes []netlink.Route) {
	sort.SliceStable(routes, func(i, j int) bool { return routes[i].Scope > routes[j].Scope })
}

// addRules adds the pin rule of a family: one for all traffic, or one per
// source address of that family.
func addRules(family int, from []net.IP) error {
	var rules []*netlink.Rule
	for _, ip := range from {
		if (ip.To4() != nil) != (family == netlink.FAMILY_V4) {
			continue
		}
		r := pinRule(family)
		bits := 8 * len(ip)
		if ip.To4() != nil {
			ip, bits = ip.To4(), 32
		}
		r.Src = &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}
		rules = append(rules, r)
	}
	if len(from) == 0 {
		rules = append(rules, pinRule(family))
	}
	for _, r := range rules {
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding pin rule: %w", err)
		}
	}
	return nil
}

func pinRule(family int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family, r.Table, r.Priority = family, Table, RulePriority
	return r
}

func missing(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL)
}

// HasAddresses checks that link exists in netns and holds every address in
// ips (the CHECK of an interface that no longer has its plugin's name).
func HasAddresses(netns, link string, ips []net.IP) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(link)
		if err != nil {
			return fmt.Errorf("interface %s: %w", link, err)
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("interface %s: listing addresses: %w", link, err)
		}
		for _, ip := range ips {
			if !holds(addrs, ip) {
				return fmt.Errorf("interface %s lacks address %s", link, ip)
			}
		}
		return nil
	})
}
