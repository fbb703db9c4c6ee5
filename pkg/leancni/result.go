package leancni

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

// parseResult is invoke.ExecPluginWithResult's result: in the version the
// plugin printed, or when it printed none, the config's.
func parseResult(out []byte, confVersion string) (types.Result, error) {
	// Most plugins answer in a version of the current result type: one
	// decode, as its creator does.
	var r current.Result
	if json.Unmarshal(out, &r) == nil && (r.CNIVersion == "1.0.0" || r.CNIVersion == current.ImplementedSpecVersion) {
		return &r, nil
	}
	var v struct {
		CNIVersion any `json:"cniVersion"`
	}
	if json.Unmarshal(out, &v) == nil {
		if ver, ok := v.CNIVersion.(string); ok && ver != "" {
			return create.Create(ver, out)
		}
	}
	return fixup(out, confVersion)
}

// fixup gives a result without a version the config's, as invoke does
// (fixupResultVersion), with the same errors.
func fixup(out []byte, confVersion string) (types.Result, error) {
	if confVersion == "" {
		confVersion = "0.1.0" // version.ConfigDecoder's default
	}
	var raw map[string]any
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("failed to unmarshal raw result: %w", err)
	}
	if raw == nil {
		raw = map[string]any{}
	}
	raw["cniVersion"] = confVersion
	fixed, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("failed to remarshal fixed result: %w", err)
	}
	return create.Create(confVersion, fixed)
}

// EncodeResult encodes r as json.Marshal does (a result of 1.0.0 or later
// without an empty "dns"), in one pass: the result's own MarshalJSON
// encodes it, decodes it into a map and encodes that again.
func EncodeResult(r types.Result) ([]byte, error) {
	res, ok := r.(*current.Result)
	if !ok {
		return json.Marshal(r)
	}
	out := struct {
		CNIVersion string               `json:"cniVersion,omitempty"`
		Interfaces []*current.Interface `json:"interfaces,omitempty"`
		IPs        []*current.IPConfig  `json:"ips,omitempty"`
		Routes     []*types.Route       `json:"routes,omitempty"`
		DNS        *types.DNS           `json:"dns,omitempty"`
	}{res.CNIVersion, res.Interfaces, res.IPs, res.Routes, nil}
	if !res.DNS.IsEmpty() {
		out.DNS = &res.DNS
	}
	return json.Marshal(out)
}
