package handover

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// HostRoute is a host route to exactly one pod address through one host
// link ("X/32 dev veth", as routed networks such as ptp add), kept in the
// sandbox record while a switch holds it back.
type HostRoute struct {
	Dst   string `json:"dst"`
	Link  string `json:"link"`
	Scope int    `json:"scope,omitempty"`
	Gw    string `json:"gw,omitempty"`
}

// WithdrawHostRoutes removes the host routes to exactly the given addresses
// except those through the links in keep, the new owner's, so that inbound
// traffic follows the new owner's route before the old link is deleted: a
// link being deleted drops what is sent to it for as long as the kernel
// takes to close it. Runs in the current (host) namespace.
func WithdrawHostRoutes(ips []net.IP, keep []string) error {
	_, err := removeHostRoutes(ips, func(l int) bool { return !linkIn(l, keep) })
	return err
}

// ParkHostRoutes removes the host routes to exactly the given addresses
// through the links in through (the new network of a switch, before the
// cut-over) and returns them for RestoreHostRoutes: inbound traffic stays
// on the old network until the new one is ready (its host-side IPv6
// addresses may still be in duplicate address detection, when the host
// cannot resolve the pod through them). Runs in the host namespace.
func ParkHostRoutes(ips []net.IP, through []string) ([]HostRoute, error) {
	return removeHostRoutes(ips, func(l int) bool { return linkIn(l, through) })
}

// RestoreHostRoutes adds parked routes back; routes already there and links
// that are gone are fine. Runs in the host namespace.
func RestoreHostRoutes(routes []HostRoute) error {
	var errs []error
	for _, r := range routes {
		l, err := netlinksafe.LinkByName(r.Link)
		if err != nil {
			continue
		}
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			errs = append(errs, fmt.Errorf("parked route %q: %w", r.Dst, err))
			continue
		}
		route := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.Scope(r.Scope), Gw: net.ParseIP(r.Gw)}
		if err := netlink.RouteReplace(route); err != nil {
			errs = append(errs, fmt.Errorf("restoring host route %s dev %s: %w", r.Dst, r.Link, err))
		}
	}
	return errors.Join(errs...)
}

// removeHostRoutes deletes the routes to exactly ips whose link index
// matches and returns what it deleted.
func removeHostRoutes(ips []net.IP, match func(link int) bool) ([]HostRoute, error) {
	var done []HostRoute
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
			r := &routes[i]
			if !match(r.LinkIndex) {
				continue
			}
			if err := netlink.RouteDel(r); err != nil && !missing(err) {
				errs = append(errs, fmt.Errorf("removing host route %s: %w", r, err))
				continue
			}
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				hr := HostRoute{Dst: r.Dst.String(), Link: l.Attrs().Name, Scope: int(r.Scope)}
				if r.Gw != nil {
					hr.Gw = r.Gw.String()
				}
				done = append(done, hr)
			}
		}
	}
	return done, errors.Join(errs...)
}

// linkIn reports whether the link with index i is one of names.
func linkIn(i int, names []string) bool {
	for _, name := range names {
		if l, err := netlinksafe.LinkByName(name); err == nil && l.Attrs().Index == i {
			return true
		}
	}
	return false
}

// RoutedVia returns the names of the host links through which the host
// routes ips (in the current, host namespace); addresses without a route
// are skipped.
func RoutedVia(ips []net.IP) []string {
	seen := map[string]bool{}
	var out []string
	for _, ip := range ips {
		routes, err := netlink.RouteGet(ip)
		if err != nil || len(routes) == 0 {
			continue
		}
		l, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil || seen[l.Attrs().Name] {
			continue
		}
		seen[l.Attrs().Name] = true
		out = append(out, l.Attrs().Name)
	}
	return out
}
