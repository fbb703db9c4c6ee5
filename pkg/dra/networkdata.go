package dra

import (
	current "github.com/containernetworking/cni/pkg/types/100"
)

// maxIPs is the API's limit on networkData.ips.
const maxIPs = 16

// NetworkDataOf is the networkData of an attachment: the interface's name in
// the pod (link), and the addresses (CIDR notation, as the API asks) and MAC
// the delegate's result gives the sandbox interface it was called for
// (ifName); the addresses of a result naming no sandbox interface are all
// taken, as network-status does.
func NetworkDataOf(link, ifName string, res *current.Result) NetworkData {
	nd := NetworkData{InterfaceName: link}
	idx := -1
	for i, iface := range res.Interfaces {
		if iface.Name == ifName && iface.Sandbox != "" {
			idx, nd.HardwareAddress = i, iface.Mac
			break
		}
	}
	seen := map[string]bool{}
	for _, ip := range res.IPs {
		if ip.Interface != nil && idx >= 0 && *ip.Interface != idx {
			continue
		}
		cidr := ip.Address.String()
		if len(nd.IPs) == maxIPs || seen[cidr] {
			continue
		}
		seen[cidr] = true
		nd.IPs = append(nd.IPs, cidr)
	}
	return nd
}
