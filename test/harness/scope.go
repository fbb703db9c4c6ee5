package harness

import (
	"net"
	"net/netip"
	"regexp"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Scope is what one test made on the host, so that a leak check looks at
// that and nothing else: other network activity on the machine (another
// CNI, another test run, a container runtime) must not fail it, while
// everything the test made stays checked.
//
// A host link is the test's when its name matches Names, when its veth peer
// (or other link) is in one of NetNS, when it holds an address in Prefixes,
// or when its master (a bridge) or its parent (macvlan, veth peer on the
// host) is the test's. Addresses are the test's when they are on such a link
// or in Prefixes; routes when they go through such a link, have their
// destination, gateway or source in Prefixes, or are in one of Tables;
// policy rules when they match a source or destination in Prefixes, name
// such a link, or point at one of Tables.
type Scope struct {
	// Names matches the names of the links the test chose (bridges,
	// masters, clients); nil matches none.
	Names *regexp.Regexp
	// NetNS are the network namespaces the test made (its pods').
	NetNS []ns.NetNS
	// Prefixes are the test's subnets.
	Prefixes []netip.Prefix
	// Tables are routing tables only the code under test uses.
	Tables []int
}

// TakeScopedSnapshot is TakeSnapshot restricted to what scope says the
// test made (the files under dirs are all recorded, as by TakeSnapshot).
func TakeScopedSnapshot(scope Scope, dirs ...string) (Snapshot, error) {
	return takeSnapshot(&scope, dirs)
}

// scoped decides, for one listing of the host's state, what is in a scope.
type scoped struct {
	scope *Scope
	links map[int]bool // indexes of the test's links
	names map[string]bool
}

// inScope works out which of links are the scope's; it runs on the thread
// that listed them, after the listing (which gives the peer namespaces
// their ids).
func inScope(sc *Scope, links []netlink.Link, addrs []netlink.Addr) *scoped {
	s := &scoped{scope: sc, links: map[int]bool{}, names: map[string]bool{}}
	nsids := sc.nsids()
	for _, l := range links {
		a := l.Attrs()
		if sc.Names != nil && sc.Names.MatchString(a.Name) || a.NetNsID >= 0 && nsids[a.NetNsID] {
			s.links[a.Index] = true
		}
	}
	for _, a := range addrs {
		if sc.holds(a.IP) {
			s.links[a.LinkIndex] = true
		}
	}
	// Ports of the test's bridges, links on the test's links and the
	// host-side peers of the test's veths, transitively.
	for changed := true; changed; {
		changed = false
		for _, l := range links {
			a := l.Attrs()
			if s.links[a.Index] {
				continue
			}
			if a.MasterIndex > 0 && s.links[a.MasterIndex] || a.NetNsID < 0 && a.ParentIndex > 0 && s.links[a.ParentIndex] {
				s.links[a.Index], changed = true, true
			}
		}
	}
	for _, l := range links {
		if s.links[l.Attrs().Index] {
			s.names[l.Attrs().Name] = true
		}
	}
	return s
}

// nsids are the ids the host gives the scope's network namespaces (a
// namespace without one has no link on the host pointing into it).
func (sc *Scope) nsids() map[int]bool {
	out := map[int]bool{}
	for _, n := range sc.NetNS {
		if id, err := netlink.GetNetNsIdByFd(int(n.Fd())); err == nil && id >= 0 {
			out[id] = true
		}
	}
	return out
}

// holds reports whether ip is in one of the scope's prefixes.
func (sc *Scope) holds(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	a = a.Unmap()
	for _, p := range sc.Prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// within reports whether the network n lies inside one of the scope's
// prefixes (a route to 10.0.0.0/8 is not the test's for holding its /24).
func (sc *Scope) within(n *net.IPNet) bool {
	if n == nil {
		return false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	for _, p := range sc.Prefixes {
		if ones >= p.Bits() && p.Contains(a) {
			return true
		}
	}
	return false
}

func (sc *Scope) table(t int) bool {
	for _, v := range sc.Tables {
		if v == t {
			return true
		}
	}
	return false
}

func (s *scoped) addr(a netlink.Addr) bool {
	return s == nil || s.links[a.LinkIndex] || s.scope.holds(a.IP)
}

func (s *scoped) route(r netlink.Route) bool {
	if s == nil || s.links[r.LinkIndex] || s.scope.within(r.Dst) || s.scope.holds(r.Gw) || s.scope.holds(r.Src) || s.scope.table(r.Table) {
		return true
	}
	for _, hop := range r.MultiPath {
		if s.links[hop.LinkIndex] || s.scope.holds(hop.Gw) {
			return true
		}
	}
	return false
}

func (s *scoped) rule(r netlink.Rule) bool {
	return s == nil || s.scope.within(r.Src) || s.scope.within(r.Dst) || s.names[r.IifName] || s.names[r.OifName] || s.scope.table(r.Table)
}

func (s *scoped) link(l netlink.Link) bool { return s == nil || s.links[l.Attrs().Index] }
