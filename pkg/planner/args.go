package planner

import (
	"fmt"
	"strings"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// CNIArgOf maps the selection keys Multus also passes in CNI_ARGS to their
// CNI_ARGS key (static IPAM reads IP, macvlan and tuning read MAC).
var CNIArgOf = map[string]string{"mac": "MAC", "ips": "IP"}

// capabilityArgs turns the element's capability keys into runtimeConfig
// (libcni passes each only to the plugins declaring it). A key no plugin of
// the network declares is refused, except ips and mac when not strict:
// those also go into CNI_ARGS as Multus passes them (MAC=, then IP= with
// the addresses comma-separated), returned as pairs.
func capabilityArgs(e selection.Element, caps map[string]bool, strict bool) (map[string]interface{}, [][2]string, error) {
	reqs := requests(e)
	if len(reqs) == 0 {
		return nil, nil, nil
	}
	args := map[string]interface{}{}
	var viaArgs [][2]string
	for _, r := range reqs {
		capName := capabilityOf[r.key]
		args[capName] = r.value
		switch argKey, hasArg := CNIArgOf[r.key]; {
		case caps[capName]:
		case hasArg && !strict:
			viaArgs = append(viaArgs, [2]string{argKey, cniArgValue(r.value)})
		case hasArg:
			return nil, nil, fmt.Errorf("%q requested but no plugin of the network declares the %q capability "+
				"(strictCapabilities is set; without it the request would go to the plugins as %s= in CNI_ARGS, as Multus passes it)",
				r.key, capName, argKey)
		default:
			return nil, nil, fmt.Errorf("%q requested but no plugin of the network declares the %q capability", r.key, capName)
		}
	}
	return args, viaArgs, nil
}

// request is one capability key of a selection element and its value.
type request struct {
	key   string
	value interface{}
}

// requests lists the element's capability keys, mac before ips (the order
// Multus writes them into CNI_ARGS).
func requests(e selection.Element) []request {
	var r []request
	if e.MAC != "" {
		r = append(r, request{"mac", e.MAC})
	}
	if len(e.IPs) > 0 {
		r = append(r, request{"ips", e.IPs})
	}
	if len(e.PortMappings) > 0 {
		r = append(r, request{"portMappings", e.PortMappings})
	}
	if e.Bandwidth != nil {
		r = append(r, request{"bandwidth", e.Bandwidth})
	}
	if e.InfinibandGUID != "" {
		r = append(r, request{"infiniband-guid", e.InfinibandGUID})
	}
	return r
}

// cniArgValue is a capability value as Multus writes it into CNI_ARGS.
func cniArgValue(v interface{}) string {
	if ips, ok := v.([]string); ok {
		return strings.Join(ips, ",")
	}
	return fmt.Sprint(v)
}

// injectArgs puts cni-args and ipam-claim-reference into every plugin's
// args.cni, and an explicit deviceID into the plugins.
func injectArgs(s *attachment.Spec, e selection.Element) error {
	args := map[string]interface{}{}
	for k, v := range e.CNIArgs {
		args[k] = v
	}
	if e.IPAMClaimReference != "" {
		args["ipam-claim-reference"] = e.IPAMClaimReference
	}
	if len(args) > 0 {
		conf, err := attachment.MergeCNIArgs(s.Config, args)
		if err != nil {
			return fmt.Errorf("network %s: injecting cni-args: %w", e.Key(), err)
		}
		s.Config = conf
	}
	if e.DeviceID != "" {
		return s.SetDeviceID(e.DeviceID)
	}
	return nil
}
