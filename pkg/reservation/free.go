package reservation

import (
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
)

// maxScan bounds how many addresses of one range Free looks at.
const maxScan = 1 << 16

// Free returns, for each range set of conf's host-local IPAM (its own, or
// the one flannel builds), the first address of it that its store has not
// handed out and taken does not report, with the range's prefix. ok is
// false when conf has no host-local IPAM naming its ranges.
func Free(conf []byte, taken func(net.IP) bool) (cidrs []string, ok bool, err error) {
	plugins, top, err := decode(conf)
	if err != nil {
		return nil, false, err
	}
	var name string
	_ = json.Unmarshal(top["name"], &name)
	for _, p := range plugins {
		ip := ipamOf(p)
		if ip.typ != "host-local" {
			continue
		}
		section := ip.section
		if ip.built {
			if section, err = builtSection(p); err != nil {
				return nil, false, err
			}
		}
		dir := filepath.Join(hostLocalDir(section), name)
		for _, set := range rangeSets(section) {
			addr, err := firstFree(set, dir, taken)
			if err != nil {
				return nil, false, err
			}
			cidrs, ok = append(cidrs, addr), true
		}
	}
	return cidrs, ok, nil
}

// hlRange is one host-local range.
type hlRange struct{ Subnet, RangeStart, RangeEnd, Gateway string }

// rangeSets reads a host-local section's "ranges", or its legacy
// top-level range.
func rangeSets(section map[string]interface{}) [][]hlRange {
	var sets [][]hlRange
	if raw, err := json.Marshal(section["ranges"]); err == nil {
		_ = json.Unmarshal(raw, &sets)
	}
	if len(sets) == 0 {
		var r hlRange
		if raw, err := json.Marshal(section); err == nil && json.Unmarshal(raw, &r) == nil && r.Subnet != "" {
			sets = [][]hlRange{{r}}
		}
	}
	return sets
}

// errRangeFull is firstFree's answer for a set without a free address.
var errRangeFull = errors.New("no free address in its ranges")

func firstFree(set []hlRange, dir string, taken func(net.IP) bool) (string, error) {
	for _, r := range set {
		_, subnet, err := net.ParseCIDR(r.Subnet)
		if err != nil {
			continue
		}
		start, end, gw := bounds(r, subnet)
		for i, ip := 0, start; i < maxScan && cmp(ip, end) <= 0; i, ip = i+1, next(ip) {
			if ip.Equal(gw) || taken(ip) {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, ip.String())); os.IsNotExist(err) {
				return (&net.IPNet{IP: ip, Mask: subnet.Mask}).String(), nil
			}
			if ip.Equal(end) {
				break
			}
		}
	}
	return "", errRangeFull
}

// bounds are a range's first and last address and its gateway, defaulted
// as host-local does.
func bounds(r hlRange, subnet *net.IPNet) (start, end, gw net.IP) {
	base := norm(subnet.IP)
	last := make(net.IP, len(base))
	for i := range base {
		last[i] = base[i] | ^subnet.Mask[len(subnet.Mask)-len(base)+i]
	}
	if len(base) == net.IPv4len {
		last = prev(last) // the broadcast address
	}
	start, end, gw = next(base), last, next(base)
	if ip := net.ParseIP(r.RangeStart); ip != nil {
		start = norm(ip)
	}
	if ip := net.ParseIP(r.RangeEnd); ip != nil {
		end = norm(ip)
	}
	if ip := net.ParseIP(r.Gateway); ip != nil {
		gw = norm(ip)
	}
	return start, end, gw
}

func norm(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip.To16()
}

func next(ip net.IP) net.IP { return add(ip, 1) }
func prev(ip net.IP) net.IP { return add(ip, -1) }

func add(ip net.IP, d int64) net.IP {
	n := new(big.Int).Add(new(big.Int).SetBytes(ip), big.NewInt(d))
	out := make(net.IP, len(ip))
	n.FillBytes(out)
	return out
}

func cmp(a, b net.IP) int { return new(big.Int).SetBytes(a).Cmp(new(big.Int).SetBytes(b)) }
