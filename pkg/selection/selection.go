// Package selection parses the pod annotations that select networks:
// k8s.v1.cni.cncf.io/networks (short form and JSON list, NPWG v1.3 §4.1) and
// v1.multus-cni.io/default-network.
package selection

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Pod annotation keys.
const (
	NetworksAnnotation       = "k8s.v1.cni.cncf.io/networks"
	DefaultNetworkAnnotation = "v1.multus-cni.io/default-network"
	// SwitchModeAnnotation (Rewire's own) chooses how the primary network
	// of a running pod is switched when DefaultNetworkAnnotation changes:
	// "keep-ip" (the default) hands the pod's addresses over to the new
	// network; "readdress" gives the pod new addresses from the new network
	// and keeps the old interface for connections on the old addresses
	// until they end or the daemon's switchDrainTimeout passes.
	SwitchModeAnnotation = "rewire.io/switch-mode"
	// DrainTimeoutAnnotation (Rewire's own, e.g. "5m") overrides the
	// daemon's switchDrainTimeout for a re-addressing switch of the pod.
	DrainTimeoutAnnotation = "rewire.io/drain-timeout"
)

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Bandwidth is the bandwidth capability.
type Bandwidth struct {
	IngressRate  int `json:"ingressRate"`
	IngressBurst int `json:"ingressBurst"`
	EgressRate   int `json:"egressRate"`
	EgressBurst  int `json:"egressBurst"`
}

// Element is one network selection element (NPWG v1.3 §4.1.2).
type Element struct {
	Name               string                 `json:"name"`
	Namespace          string                 `json:"namespace,omitempty"`
	IPs                []string               `json:"ips,omitempty"`
	MAC                string                 `json:"mac,omitempty"`
	Interface          string                 `json:"interface,omitempty"`
	CNIArgs            map[string]interface{} `json:"cni-args,omitempty"`
	PortMappings       []PortMapping          `json:"portMappings,omitempty"`
	Bandwidth          *Bandwidth             `json:"bandwidth,omitempty"`
	DefaultRoute       []string               `json:"default-route,omitempty"`
	InfinibandGUID     string                 `json:"infiniband-guid,omitempty"`
	IPAMClaimReference string                 `json:"ipam-claim-reference,omitempty"`
	DeviceID           string                 `json:"deviceID,omitempty"`
}

// Key returns "namespace/name" of the selected network.
func (e *Element) Key() string { return e.Namespace + "/" + e.Name }

// ParseNetworks parses the networks annotation. Elements without a namespace
// get podNamespace. An empty annotation selects nothing.
func ParseNetworks(value, podNamespace string) ([]Element, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, nil
	}
	var elems []Element
	if strings.HasPrefix(value, "[") || strings.HasPrefix(value, "{") {
		if err := json.Unmarshal([]byte(value), &elems); err != nil {
			return nil, fmt.Errorf("%s: invalid JSON list of network selection elements: %w", NetworksAnnotation, err)
		}
	} else {
		for _, item := range strings.Split(value, ",") {
			e, err := parseShort(strings.TrimSpace(item))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", NetworksAnnotation, err)
			}
			elems = append(elems, e)
		}
	}
	for i := range elems {
		if elems[i].Namespace == "" {
			elems[i].Namespace = podNamespace
		}
		if err := elems[i].Validate(); err != nil {
			return nil, fmt.Errorf("%s: element %d (%q): %w", NetworksAnnotation, i, elems[i].Name, err)
		}
	}
	return elems, nil
}

// ParseDefaultNetwork parses the default-network annotation:
// "[namespace/]name" or, as Multus also accepts, a JSON list holding one
// network selection element with a name and an optional namespace (nothing
// else applies to the primary network). Namespace stays empty when the value
// names none: Multus looks such a name up in its multusNamespace (the
// planner resolves it). It returns nil when the annotation is empty.
func ParseDefaultNetwork(value string) (*Element, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, nil
	}
	e, err := parseDefault(value)
	if err == nil {
		check := e
		if check.Namespace == "" {
			check.Namespace = "default" // any valid one: the name is checked here, the namespace later
		}
		err = check.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DefaultNetworkAnnotation, err)
	}
	return &e, nil
}

// parseDefault decodes the default-network annotation's two forms.
func parseDefault(value string) (Element, error) {
	if !strings.HasPrefix(value, "[") && !strings.HasPrefix(value, "{") {
		if strings.Contains(value, ",") {
			return Element{}, fmt.Errorf("more than one network given (%q): the default network is one", value)
		}
		e, err := parseShort(value)
		if err == nil && e.Interface != "" {
			err = errors.New("an interface name cannot be given for the default network")
		}
		return e, err
	}
	var elems []Element
	if err := json.Unmarshal([]byte(value), &elems); err != nil {
		return Element{}, fmt.Errorf("invalid JSON list of network selection elements: %w", err)
	}
	if len(elems) != 1 {
		return Element{}, fmt.Errorf("want exactly one network selection element, not %d", len(elems))
	}
	e := elems[0]
	if extra := otherKeys(e); len(extra) > 0 {
		return Element{}, fmt.Errorf("only name and namespace can be given for the default network, not %s", strings.Join(extra, ", "))
	}
	return e, nil
}

// otherKeys lists the keys an element sets besides name and namespace.
func otherKeys(e Element) []string {
	e.Name, e.Namespace = "", ""
	raw, _ := json.Marshal(e)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(raw, &m)
	delete(m, "name")
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// parseShort parses "[namespace/]name[@interface]".
func parseShort(s string) (Element, error) {
	var e Element
	if s == "" {
		return e, errors.New("empty network name in list")
	}
	if strings.ContainsAny(s, " \t\"{}[]") {
		return e, fmt.Errorf("invalid network reference %q: want [namespace/]name[@interface]", s)
	}
	if at := strings.Split(s, "@"); len(at) > 2 {
		return e, fmt.Errorf("invalid network reference %q: more than one '@'", s)
	} else if len(at) == 2 {
		s, e.Interface = at[0], at[1]
		if e.Interface == "" {
			return e, fmt.Errorf("invalid network reference %q: empty interface after '@'", s+"@")
		}
	}
	switch parts := strings.Split(s, "/"); len(parts) {
	case 1:
		e.Name = parts[0]
	case 2:
		e.Namespace, e.Name = parts[0], parts[1]
		if e.Namespace == "" {
			return e, fmt.Errorf("invalid network reference %q: empty namespace", s)
		}
	default:
		return e, fmt.Errorf("invalid network reference %q: more than one '/'", s)
	}
	return e, nil
}

// Validate checks one element; every error names the offending key.
func (e *Element) Validate() error {
	if e.Name == "" {
		return errors.New("name is required")
	}
	if errs := validation.IsDNS1123Subdomain(e.Name); len(errs) > 0 {
		return fmt.Errorf("name %q: %s", e.Name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(e.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", e.Namespace, strings.Join(errs, "; "))
	}
	if e.Interface != "" {
		if err := utils.ValidateInterfaceName(e.Interface); err != nil {
			return fmt.Errorf("interface %q: %w", e.Interface, err)
		}
	}
	if len(e.IPs) > 0 && e.IPAMClaimReference != "" {
		return errors.New("ips and ipam-claim-reference are mutually exclusive")
	}
	for _, ip := range e.IPs {
		if !validIP(ip) {
			return fmt.Errorf("ips: %q is not an IP address or CIDR", ip)
		}
	}
	if e.MAC != "" {
		if _, err := net.ParseMAC(e.MAC); err != nil {
			return fmt.Errorf("mac %q: %w", e.MAC, err)
		}
	}
	for _, gw := range e.DefaultRoute {
		if net.ParseIP(gw) == nil {
			return fmt.Errorf("default-route: %q is not an IP address", gw)
		}
	}
	for i, pm := range e.PortMappings {
		if pm.ContainerPort <= 0 || pm.ContainerPort > 65535 || pm.HostPort < 0 || pm.HostPort > 65535 {
			return fmt.Errorf("portMappings[%d]: ports must be within 1-65535", i)
		}
	}
	if b := e.Bandwidth; b != nil && (b.IngressRate < 0 || b.IngressBurst < 0 || b.EgressRate < 0 || b.EgressBurst < 0) {
		return errors.New("bandwidth: rates and bursts must not be negative")
	}
	return nil
}

func validIP(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	_, _, err := net.ParseCIDR(s)
	return err == nil
}
