// Package netstatus builds the k8s.v1.cni.cncf.io/network-status pod
// annotation (NPWG v1.3 §4.1.2.1) from CNI results.
package netstatus

import (
	"encoding/json"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// Annotation is the pod annotation Rewire writes.
const Annotation = "k8s.v1.cni.cncf.io/network-status"

// DNS is the dns member of a status entry.
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Domain      string   `json:"domain,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Status is one entry of the network-status list.
type Status struct {
	Name       string          `json:"name"`
	Interface  string          `json:"interface,omitempty"`
	IPs        []string        `json:"ips,omitempty"`
	MAC        string          `json:"mac,omitempty"`
	MTU        int             `json:"mtu,omitempty"`
	Default    bool            `json:"default,omitempty"`
	DNS        *DNS            `json:"dns,omitempty"`
	Gateway    []string        `json:"gateway,omitempty"`
	DeviceInfo json.RawMessage `json:"device-info,omitempty"`
}

// FromResult builds the entry of one attachment. Only the result's interface
// named ifName (the one in the pod's netns) and its addresses are reported;
// the caller sets Gateway on the entry that owns the default route.
func FromResult(name, ifName string, isDefault bool, res *current.Result) Status {
	s := Status{Name: name, Interface: ifName, Default: isDefault}
	idx := -1
	for i, iface := range res.Interfaces {
		if iface.Name == ifName && iface.Sandbox != "" {
			idx = i
			s.MAC = iface.Mac
			s.MTU = iface.Mtu
			break
		}
	}
	for _, ip := range res.IPs {
		if ip.Interface != nil && idx >= 0 && *ip.Interface != idx {
			continue
		}
		s.IPs = append(s.IPs, ip.Address.IP.String())
	}
	d := res.DNS
	if len(d.Nameservers)+len(d.Search)+len(d.Options) > 0 || d.Domain != "" {
		s.DNS = &DNS{Nameservers: d.Nameservers, Domain: d.Domain, Search: d.Search, Options: d.Options}
	}
	return s
}

// Marshal encodes a status list as the annotation value.
func Marshal(list []Status) (string, error) {
	b, err := json.MarshalIndent(list, "", "    ")
	if err != nil {
		return "", fmt.Errorf("encoding network-status: %w", err)
	}
	return string(b), nil
}
