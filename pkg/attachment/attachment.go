// Package attachment defines what one network attachment of a pod sandbox is:
// the exact delegate configuration and runtime arguments used to add it, so
// that it can later be checked, deleted or garbage-collected with the same.
package attachment

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/libcni"

	"github.com/rewire-cni/rewire/pkg/memo"
)

// Spec is one planned attachment. It is stored verbatim and never recomputed
// from the current NAD or annotation.
type Spec struct {
	// Network names the network: "namespace/name" of a NAD, or the CNI
	// network name of a cluster network read from a file.
	Network string `json:"network"`
	// IfName is the interface name the delegate was called with (CNI_IFNAME):
	// its IPAM allocation and libcni's cache are keyed by it.
	IfName string `json:"ifName"`
	// LinkName is the interface's name in the pod when Rewire renamed it
	// after adding it (a live switch adds the new primary under a temporary
	// name and then gives it the old primary's name); empty otherwise.
	LinkName string `json:"linkName,omitempty"`
	// Primary marks the pod's default (cluster) network.
	Primary bool `json:"primary,omitempty"`
	// Config is the exact CNI config list handed to libcni.
	Config json.RawMessage `json:"config"`
	// CapabilityArgs are the runtimeConfig values (libcni passes each only to
	// plugins declaring that capability).
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
	// DefaultRoute holds the gateways this attachment must own the default
	// route through (the selection element's default-route).
	DefaultRoute []string `json:"defaultRoute,omitempty"`
	// ResourceName and DeviceID come from the NAD's resourceName and the
	// kubelet's device allocation.
	ResourceName string `json:"resourceName,omitempty"`
	DeviceID     string `json:"deviceID,omitempty"`
	// Selection is the canonical selection element the attachment was made
	// from (interface name aside): a change of it re-plugs the interface.
	Selection string `json:"selection,omitempty"`
}

// Link is the name of the interface in the pod.
func (s *Spec) Link() string {
	if s.LinkName != "" {
		return s.LinkName
	}
	return s.IfName
}

// ConfList parses Config. The list is shared by every caller with the
// same config and must not be modified.
func (s *Spec) ConfList() (*libcni.NetworkConfigList, error) {
	if list, ok := parsed.Get(s.Config); ok {
		return list, nil
	}
	list, err := libcni.ConfListFromBytes(s.Config)
	if err != nil {
		return nil, fmt.Errorf("network %s: stored config: %w", s.Network, err)
	}
	parsed.Put(s.Config, list)
	return list, nil
}

// parsed keeps the config lists parsed last (every ADD, DEL and CHECK of a
// network parses the same few configs); configs may be per pod (a device
// ID, static addresses).
var parsed = memo.Bounded[*libcni.NetworkConfigList]{Max: 256}

// SetDeviceID records the device and injects it as "deviceID" into every
// plugin of the config, which is where device plugins' CNIs read it.
func (s *Spec) SetDeviceID(id string) error {
	conf, err := MutatePlugins(s.Config, func(p map[string]interface{}) { p["deviceID"] = id })
	if err != nil {
		return fmt.Errorf("network %s: injecting deviceID: %w", s.Network, err)
	}
	s.Config, s.DeviceID = conf, id
	return nil
}

// MutatePlugins applies fn to every plugin object of a config list and
// returns the re-encoded list; other top-level keys are kept.
func MutatePlugins(conf []byte, fn func(plugin map[string]interface{})) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(conf, &top); err != nil {
		return nil, err
	}
	if top == nil {
		return nil, fmt.Errorf("config is not a JSON object")
	}
	var plugins []map[string]interface{}
	if err := DecodeJSON(top["plugins"], &plugins); err != nil {
		return nil, fmt.Errorf("config list has no plugins array: %w", err)
	}
	for _, p := range plugins {
		fn(p)
	}
	raw, err := json.Marshal(plugins)
	if err != nil {
		return nil, err
	}
	top["plugins"] = raw
	return json.Marshal(top)
}

// DecodeJSON decodes raw into v keeping numbers exact (json.Number, not
// float64), so that a config re-encoded after a change keeps its numbers.
func DecodeJSON(raw []byte, v interface{}) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	return d.Decode(v)
}

// MergeCNIArgs merges args into each plugin's "args": {"cni": {...}}
// (CNI conventions), the values given here winning.
func MergeCNIArgs(conf []byte, args map[string]interface{}) ([]byte, error) {
	return MutatePlugins(conf, func(p map[string]interface{}) {
		outer, _ := p["args"].(map[string]interface{})
		if outer == nil {
			outer = map[string]interface{}{}
		}
		cni, _ := outer["cni"].(map[string]interface{})
		if cni == nil {
			cni = map[string]interface{}{}
		}
		for k, v := range args {
			cni[k] = v
		}
		outer["cni"] = cni
		p["args"] = outer
	})
}
