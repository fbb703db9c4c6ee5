// Package reservation is the IPAM side of a live primary switch: the
// network a pod leaves keeps the pod's addresses reserved in its own IPAM
// until the pod's DEL (status.podIPs still names them), so no other pod can
// be given them meanwhile.
//
//	Hold         a config whose DEL removes the interface and every host-side
//	             piece but releases nothing (its IPAM becomes "static", whose
//	             DEL is a no-op).
//	ReleaseOnly  a config that calls only the IPAM plugins: the pod's DEL
//	             releases the held reservation with it.
//	Static       a config that configures given addresses without allocating:
//	             a network whose IPAM already holds the pod's addresses for
//	             this pod (a switch back, or two networks sharing one IPAM
//	             pool) takes them over without a second allocation.
//	Key, Ranges  which IPAM store a config allocates from, and from where.
//	CanHold, Ask what an IPAM can do (ipam.go), and flannel's built IPAM
//	             (flannel.go).
package reservation

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
)

// StaticType is the IPAM plugin Hold and Static use (a reference plugin).
const StaticType = "static"

// Hold returns conf with the IPAM of every plugin replaced by the static
// IPAM without addresses, whose DEL releases nothing.
func Hold(conf []byte) ([]byte, error) {
	return attachment.MutatePlugins(conf, func(p map[string]interface{}) {
		if ipamOf(p).typ != "" {
			p["ipam"] = map[string]interface{}{"type": StaticType}
		}
	})
}

// ReleaseOnly returns a config list whose plugins are the IPAM plugins of
// conf, each called with its plugin's IPAM section (as IPAM plugins read
// it); ok is false when conf allocates nothing.
func ReleaseOnly(conf []byte) (out []byte, ok bool, err error) {
	plugins, top, err := decode(conf)
	if err != nil {
		return nil, false, err
	}
	var keep []map[string]interface{}
	for _, p := range plugins {
		if ip := ipamOf(p); ip.typ != "" && ip.typ != StaticType {
			section := map[string]interface{}{}
			for k, v := range ip.section {
				section[k] = v
			}
			section["type"] = ip.typ
			keep = append(keep, map[string]interface{}{"type": ip.typ, "ipam": section})
		}
	}
	if len(keep) == 0 {
		return nil, false, nil
	}
	raw, err := json.Marshal(keep)
	if err != nil {
		return nil, false, err
	}
	top["plugins"] = raw
	delete(top, "disableCheck")
	out, err = json.Marshal(top)
	return out, true, err
}

// Static returns conf with the IPAM of every plugin that has one replaced by
// the static IPAM configuring res's addresses, gateways, routes and DNS.
func Static(conf []byte, res *current.Result) ([]byte, error) {
	ipam := staticIPAM(res)
	return attachment.MutatePlugins(conf, func(p map[string]interface{}) {
		switch ip := ipamOf(p); {
		case ip.built:
			p["ipam"] = builtStatic(ip.section, ipam)
		case ip.typ != "":
			p["ipam"] = ipam
		}
	})
}

// builtStatic is the static IPAM for a plugin that completes its
// delegate's IPAM section (flannel): the plugin's own section (its routes)
// with the addresses, as flannel adds its ranges and network routes to it.
func builtStatic(own, static map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range own {
		out[k] = v
	}
	out["type"], out["addresses"] = StaticType, static["addresses"]
	return out
}

func staticIPAM(res *current.Result) map[string]interface{} {
	var addrs []map[string]interface{}
	for _, ip := range res.IPs {
		a := map[string]interface{}{"address": ip.Address.String()}
		if ip.Gateway != nil {
			a["gateway"] = ip.Gateway.String()
		}
		addrs = append(addrs, a)
	}
	var routes []map[string]interface{}
	for _, r := range res.Routes {
		rt := map[string]interface{}{"dst": r.Dst.String()}
		if r.GW != nil {
			rt["gw"] = r.GW.String()
		}
		routes = append(routes, rt)
	}
	ipam := map[string]interface{}{"type": StaticType, "addresses": addrs}
	if len(routes) > 0 {
		ipam["routes"] = routes
	}
	if len(res.DNS.Nameservers) > 0 || res.DNS.Domain != "" || len(res.DNS.Search) > 0 {
		ipam["dns"] = res.DNS
	}
	return ipam
}

// Key identifies the IPAM store conf allocates from (see storeKey): two
// configs with one key hold one reservation per address. "" when conf
// allocates nothing or only configures static addresses.
func Key(conf []byte) string {
	plugins, top, err := decode(conf)
	if err != nil {
		return ""
	}
	var name string
	_ = json.Unmarshal(top["name"], &name)
	var parts []string
	for _, p := range plugins {
		ip := ipamOf(p)
		if ip.typ == "" || ip.typ == StaticType {
			continue
		}
		parts = append(parts, storeKey(ip.typ, name, ip.section))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

// storeKey names the store of one IPAM section. whereabouts keeps one
// cluster-wide pool per range and network_name, whatever the network is
// called; host-local one directory per network name and dataDir; any other
// IPAM is assumed to be as specific as its whole section.
func storeKey(typ, network string, ipam map[string]interface{}) string {
	switch typ {
	case "whereabouts":
		nets := subnets(ipam)
		sort.Strings(nets)
		name, _ := ipam["network_name"].(string)
		return fmt.Sprintf("whereabouts|%s|%s", name, strings.Join(nets, ","))
	case "host-local":
		return fmt.Sprintf("host-local|%s|%s", hostLocalDir(ipam), network)
	}
	raw, _ := json.Marshal(ipam) // maps marshal with sorted keys
	return typ + "|" + string(raw)
}

// Ranges returns the subnets conf's IPAM allocates from where it says so
// (host-local "ranges" and "subnet", whereabouts "range" and "ipRanges",
// flannel's subnet file); known is false when no plugin's IPAM names its
// subnets.
func Ranges(conf []byte) (nets []*net.IPNet, known bool) {
	plugins, _, err := decode(conf)
	if err != nil {
		return nil, false
	}
	for _, p := range plugins {
		ipam, _ := p["ipam"].(map[string]interface{})
		list := subnets(ipam)
		if ip := ipamOf(p); ip.built {
			if list, err = flannelSubnets(p); err != nil {
				continue
			}
		}
		for _, s := range list {
			_, n, _ := net.ParseCIDR(s)
			nets, known = append(nets, n), true
		}
	}
	return nets, known
}

// subnets collects the CIDRs of host-local and whereabouts configs.
func subnets(ipam map[string]interface{}) []string {
	var out []string
	str := func(v interface{}) {
		s, _ := v.(string)
		if start, rest, ok := strings.Cut(s, "-"); ok { // whereabouts' "start-end/prefix"
			_, prefix, _ := strings.Cut(rest, "/")
			s = start + "/" + prefix
		}
		if _, n, err := net.ParseCIDR(s); err == nil {
			out = append(out, n.String())
		}
	}
	str(ipam["subnet"])
	str(ipam["range"])
	if sets, ok := ipam["ranges"].([]interface{}); ok {
		for _, set := range sets {
			rs, _ := set.([]interface{})
			for _, r := range rs {
				if m, ok := r.(map[string]interface{}); ok {
					str(m["subnet"])
				}
			}
		}
	}
	if rs, ok := ipam["ipRanges"].([]interface{}); ok {
		for _, r := range rs {
			if m, ok := r.(map[string]interface{}); ok {
				str(m["range"])
			}
		}
	}
	return out
}

// Outside returns the addresses in ips that none of nets contains.
func Outside(nets []*net.IPNet, ips []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		in := false
		for _, n := range nets {
			in = in || n.Contains(ip)
		}
		if !in {
			out = append(out, ip)
		}
	}
	return out
}

// decode splits a config list into its plugins and its top-level keys.
func decode(conf []byte) ([]map[string]interface{}, map[string]json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(conf, &top); err != nil {
		return nil, nil, fmt.Errorf("config list: %w", err)
	}
	var plugins []map[string]interface{}
	if err := attachment.DecodeJSON(top["plugins"], &plugins); err != nil {
		return nil, nil, fmt.Errorf("config list has no plugins array: %w", err)
	}
	return plugins, top, nil
}
