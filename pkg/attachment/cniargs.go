package attachment

import (
	"context"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// CNIArgsKey is the CapabilityArgs key under which an attachment carries
// CNI_ARGS pairs of its own, as "KEY=VALUE;KEY=VALUE" (Multus's IP= and MAC=
// for an ips or mac request that no plugin of the network declares a
// capability for). No plugin declares it, so libcni never passes it on as
// runtimeConfig; WithCNIArgs moves it into CNI_ARGS on every ADD, CHECK and
// DEL of the attachment. It is recorded with the attachment like any other
// capability argument, so a DEL after a restart gets the same arguments.
const CNIArgsKey = "rewire.io/cni-args"

// SetCNIArgs records CNI_ARGS pairs for the attachment (none: nothing).
func (s *Spec) SetCNIArgs(pairs [][2]string) {
	if len(pairs) == 0 {
		return
	}
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p[0] + "=" + p[1]
	}
	caps := make(map[string]interface{}, len(s.CapabilityArgs)+1)
	for k, v := range s.CapabilityArgs {
		caps[k] = v
	}
	caps[CNIArgsKey] = strings.Join(parts, ";")
	s.CapabilityArgs = caps
}

// CNIArgs returns the attachment's own CNI_ARGS pairs, in order.
func (s *Spec) CNIArgs() [][2]string { return splitArgs(s.CapabilityArgs) }

func splitArgs(caps map[string]interface{}) [][2]string {
	v, _ := caps[CNIArgsKey].(string)
	if v == "" {
		return nil
	}
	var pairs [][2]string
	for _, kv := range strings.Split(v, ";") {
		if k, val, ok := strings.Cut(kv, "="); ok && k != "" {
			pairs = append(pairs, [2]string{k, val})
		}
	}
	return pairs
}

// WithCNIArgs wraps cni so that an attachment's own CNI_ARGS pairs (under
// CNIArgsKey in its runtime conf's CapabilityArgs) are appended to CNI_ARGS
// for ADD, CHECK and DEL, after the runtime's, with IgnoreUnknown=true
// first when the runtime's arguments lack it (as Multus does: plugins that
// do not know IP or MAC must not fail on them).
func WithCNIArgs(cni libcni.CNI) libcni.CNI { return cniArgs{cni} }

type cniArgs struct{ libcni.CNI }

func (c cniArgs) AddNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	return c.CNI.AddNetworkList(ctx, list, moveArgs(rt))
}

func (c cniArgs) CheckNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return c.CNI.CheckNetworkList(ctx, list, moveArgs(rt))
}

func (c cniArgs) DelNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return c.CNI.DelNetworkList(ctx, list, moveArgs(rt))
}

func (c cniArgs) AddNetwork(ctx context.Context, conf *libcni.PluginConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	return c.CNI.AddNetwork(ctx, conf, moveArgs(rt))
}

func (c cniArgs) CheckNetwork(ctx context.Context, conf *libcni.PluginConfig, rt *libcni.RuntimeConf) error {
	return c.CNI.CheckNetwork(ctx, conf, moveArgs(rt))
}

func (c cniArgs) DelNetwork(ctx context.Context, conf *libcni.PluginConfig, rt *libcni.RuntimeConf) error {
	return c.CNI.DelNetwork(ctx, conf, moveArgs(rt))
}

// moveArgs returns rt with the CNIArgsKey pairs moved from CapabilityArgs
// into Args; rt itself is not changed.
func moveArgs(rt *libcni.RuntimeConf) *libcni.RuntimeConf {
	if rt == nil {
		return nil
	}
	if _, ok := rt.CapabilityArgs[CNIArgsKey]; !ok {
		return rt
	}
	pairs := splitArgs(rt.CapabilityArgs)
	out := *rt
	out.CapabilityArgs = make(map[string]interface{}, len(rt.CapabilityArgs)-1)
	for k, v := range rt.CapabilityArgs {
		if k != CNIArgsKey {
			out.CapabilityArgs[k] = v
		}
	}
	out.Args = make([][2]string, 0, len(rt.Args)+len(pairs)+1)
	out.Args = append(out.Args, rt.Args...)
	if len(pairs) > 0 && !hasArg(rt.Args, "IgnoreUnknown") {
		out.Args = append(out.Args, [2]string{"IgnoreUnknown", "true"})
	}
	out.Args = append(out.Args, pairs...)
	return &out
}

func hasArg(args [][2]string, key string) bool {
	for _, a := range args {
		if strings.EqualFold(a[0], key) {
			return true
		}
	}
	return false
}
