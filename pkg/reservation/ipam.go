package reservation

import (
	"errors"
	"fmt"
	"path/filepath"
)

// Kind is what Rewire can do with the addresses of one IPAM type across a
// live switch (docs/live-switch.md, "IPAMs").
type Kind struct {
	Type string
	// Hold: a DEL of its plugin with the static IPAM in its place keeps the
	// address reserved, and a DEL of the IPAM alone releases exactly it.
	Hold bool
	// Request: it hands out an address asked for (runtimeConfig.ips,
	// args.cni.ips).
	Request bool
	// Why says why it cannot hold or cannot be asked.
	Why string
}

// KindOf describes an IPAM type. An unknown one is assumed to follow the
// IPAM conventions (its DEL releases what the container and interface
// hold); what it hands out for a request is checked after its ADD.
func KindOf(typ string) Kind {
	switch typ {
	case "host-local", StaticType:
		return Kind{Type: typ, Hold: true, Request: true}
	case "whereabouts":
		return Kind{Type: typ, Hold: true, Why: "whereabouts ignores requested addresses"}
	case "dhcp":
		return Kind{Type: typ, Why: "a DHCP lease is renewed by the dhcp daemon on the pod's interface, so it cannot be kept once that interface is gone, " +
			"and a DHCP server cannot be asked for a given address"}
	}
	return Kind{Type: typ, Hold: true, Request: true}
}

// ErrNoIPAM is CanHold's answer for a config none of whose plugins has an
// IPAM Rewire knows of: the plugin handed out its addresses itself.
var ErrNoIPAM = errors.New("no plugin of it has an IPAM section (its plugin hands out addresses itself), so they cannot be kept reserved for the pod")

// CanHold says why the addresses a config's attachment was given cannot
// stay reserved once its interface is deleted (nil: they can).
func CanHold(conf []byte) error {
	plugins, _, err := decode(conf)
	if err != nil {
		return err
	}
	found := false
	for _, p := range plugins {
		ip := ipamOf(p)
		if ip.typ == "" {
			continue
		}
		found = true
		if k := KindOf(ip.typ); !k.Hold {
			return fmt.Errorf("its IPAM %s cannot keep them reserved: %s", ip.typ, k.Why)
		}
	}
	if !found {
		return ErrNoIPAM
	}
	return nil
}

// CannotRequest says why a config's IPAM cannot be asked for given
// addresses ("" when it can, or when it has no IPAM Rewire knows of).
func CannotRequest(conf []byte) string {
	plugins, _, err := decode(conf)
	if err != nil {
		return err.Error()
	}
	for _, p := range plugins {
		if ip := ipamOf(p); ip.typ != "" {
			if k := KindOf(ip.typ); !k.Request {
				return k.Why
			}
		}
	}
	return ""
}

// pluginIPAM is the IPAM section one plugin's IPAM receives: the plugin's
// own "ipam", or what a plugin that builds its delegate's IPAM completes it
// to (built: flannel, from its subnet file; see flannel.go).
type pluginIPAM struct {
	typ     string
	section map[string]interface{}
	built   bool
}

func ipamOf(p map[string]interface{}) pluginIPAM {
	section, _ := p["ipam"].(map[string]interface{})
	typ, _ := section["type"].(string)
	if t, _ := p["type"].(string); t == FlannelType {
		if typ == "" {
			typ = "host-local" // flannel's default
		}
		return pluginIPAM{typ: typ, section: section, built: true}
	}
	return pluginIPAM{typ: typ, section: section}
}

// defaultHostLocalDir is host-local's dataDir when its config has none.
const defaultHostLocalDir = "/var/lib/cni/networks"

// hostLocalDir is a host-local section's store directory, cleaned.
func hostLocalDir(ipam map[string]interface{}) string {
	dir, _ := ipam["dataDir"].(string)
	if dir == "" {
		return defaultHostLocalDir
	}
	return filepath.Clean(dir)
}

// Asking is how an IPAM is asked for given addresses.
type Asking int

const (
	// NoAsking: it cannot be (HowToAsk).
	NoAsking Asking = iota
	// ByCapability: runtimeConfig "ips", for a plugin declaring it.
	ByCapability
	// ByFlannel: flannel's delegate's args.cni.ips (Ask).
	ByFlannel
)

// HowToAsk says how conf's IPAM can be asked for given addresses; ips
// says whether a plugin of conf declares the "ips" capability.
func HowToAsk(conf []byte, ips bool) Asking {
	switch _, flannel, _ := Ask(conf, nil); {
	case CannotRequest(conf) != "":
		return NoAsking
	case ips:
		return ByCapability
	case flannel:
		return ByFlannel
	}
	return NoAsking
}
