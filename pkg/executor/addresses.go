// Address ownership: which addresses the new network of a switch holds and
// how (claim, keptAll, canHold), and the guard that no address is held by
// two sandboxes on the node (uniqueAddresses).

package executor

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/reservation"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/pkg/store"
)

// claim makes spec hand out ips, the pod's primary addresses, for a
// keep-ip switch. When the pod already holds them in spec's IPAM store (a
// switch back to a network it left, whose reservation is Retained, or a
// network sharing the current one's IPAM pool), spec configures them
// statically and that reservation stays their owner; otherwise spec's IPAM
// is asked for them (the "ips" capability) and holds them too. A network
// that can do neither is refused, saying what would make it possible.
func claim(sb *store.Sandbox, spec *attachment.Spec, from *store.Attachment, ips []*net.IPNet) error {
	spec.CapabilityArgs = withIPs(from.CapabilityArgs, nil)
	if key := reservation.Key(spec.Config); key != "" {
		for i := range sb.Attachments {
			a := &sb.Attachments[i]
			held := a.State == store.Added || a.State == store.Retained
			if !held || reservation.Key(a.Config) != key || !holdsAll(a, ips) {
				continue
			}
			res, err := storedResult(a)
			if err != nil {
				return err
			}
			conf, err := reservation.Static(spec.Config, res)
			if err != nil {
				return &SwitchRefused{Reason: fmt.Sprintf("network %s: %v", spec.Network, err)}
			}
			spec.Config = conf
			return nil
		}
	}
	how, err := howToAsk(spec, from, ips)
	if err != nil {
		return err
	}
	if nets, known := reservation.Ranges(spec.Config); known {
		if out := reservation.Outside(nets, ipsOf(ips)); len(out) > 0 {
			return &SwitchRefused{Reason: fmt.Sprintf("network %s cannot take over %v: its IPAM ranges %v do not contain it "+
				"(add a range holding it, or switch with %s: readdress)", spec.Network, out, nets, selection.SwitchModeAnnotation)}
		}
	}
	if how == reservation.ByCapability {
		spec.CapabilityArgs = withIPs(from.CapabilityArgs, ips)
		return nil
	}
	conf, _, err := reservation.Ask(spec.Config, cidrs(ips))
	if err != nil {
		return &SwitchRefused{Reason: fmt.Sprintf("network %s: %v", spec.Network, err)}
	}
	spec.Config = conf
	return nil
}

// howToAsk says how spec's IPAM is asked for the pod's addresses ips, or
// refuses a network that cannot be asked, saying what would make it work.
func howToAsk(spec *attachment.Spec, from *store.Attachment, ips []*net.IPNet) (reservation.Asking, error) {
	if why := reservation.CannotRequest(spec.Config); why != "" {
		return 0, &SwitchRefused{Reason: fmt.Sprintf("network %s cannot take over %v: %s (give it the same IPAM pool as %s, or switch with %s: readdress)",
			spec.Network, ips, why, from.Network, selection.SwitchModeAnnotation)}
	}
	list, err := spec.ConfList()
	if err != nil {
		return 0, &SwitchRefused{Reason: err.Error()}
	}
	if how := reservation.HowToAsk(spec.Config, nad.Capabilities(list)["ips"]); how != reservation.NoAsking {
		return how, nil
	}
	return 0, &SwitchRefused{Reason: fmt.Sprintf("network %s cannot take over %v: none of its plugins declares the \"ips\" capability "+
		"(add \"capabilities\":{\"ips\":true} to the plugin carrying its IPAM, give it the same IPAM pool as %s, "+
		"or switch with %s: readdress)", spec.Network, ips, from.Network, selection.SwitchModeAnnotation)}
}

func cidrs(nets []*net.IPNet) []string {
	out := make([]string, len(nets))
	for i, n := range nets {
		out[i] = n.String()
	}
	return out
}

// holdsAll reports whether an attachment's result has every address of ips.
func holdsAll(a *store.Attachment, ips []*net.IPNet) bool {
	have := podIPs(a)
	for _, ip := range ips {
		found := false
		for _, h := range have {
			found = found || h.Equal(ip.IP)
		}
		if !found {
			return false
		}
	}
	return true
}

// canHold refuses a switch whose old primary could not be retired keeping
// its reservation: an IPAM that cannot hold (reservation.CanHold), or no
// reference static IPAM plugin in the bin dirs.
func (e *Executor) canHold(from *store.Attachment) error {
	if err := reservation.CanHold(from.Config); err != nil {
		return &SwitchRefused{Reason: fmt.Sprintf("the pod's addresses on %s: %v", from.Network, err)}
	}
	if _, ok, _ := reservation.ReleaseOnly(from.Config); !ok || len(e.BinDirs) == 0 {
		return nil
	}
	if _, err := invoke.FindInPath(reservation.StaticType, e.BinDirs); err != nil {
		return &SwitchRefused{Reason: fmt.Sprintf("keeping the pod's addresses reserved in %s needs the reference %q IPAM plugin in %v",
			from.Network, reservation.StaticType, e.BinDirs)}
	}
	return nil
}

// keptAll checks that a keep-ip switch's new attachment holds every address
// of the old primary: an IPAM that ignores requested addresses (whereabouts
// does, even when a plugin declares the "ips" capability) hands out others.
func (e *Executor) keptAll(sb *store.Sandbox, to *store.Attachment) error {
	from := sb.Find(sb.Switch.From)
	if sb.Switch.Readdress || from == nil {
		return nil
	}
	want, err := podAddresses(from)
	if err != nil {
		return err
	}
	if !holdsAll(to, want) {
		return fmt.Errorf("network %s handed out %v instead of the pod's %v: its IPAM does not honour requested addresses "+
			"(give it the same IPAM pool as %s, or switch with %s: readdress)", to.Network, Addresses(to), ipsOf(want), from.Network, selection.SwitchModeAnnotation)
	}
	return nil
}

// withIPs returns the runtime arguments of the old primary with "ips" set
// to the addresses the new network must hand out (none: no "ips").
func withIPs(args map[string]interface{}, ips []*net.IPNet) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range args {
		out[k] = v
	}
	delete(out, "ips")
	if len(ips) == 0 {
		return out
	}
	list := make([]string, len(ips))
	for i, ip := range ips {
		list[i] = ip.String()
	}
	out["ips"] = list
	return out
}

func ipsOf(nets []*net.IPNet) []net.IP {
	out := make([]net.IP, len(nets))
	for i, n := range nets {
		out[i] = n.IP
	}
	return out
}

// uniqueAddresses refuses a result holding an address that an attachment of
// another sandbox on this node holds (live, Retained after a switch, or
// claimed by an operation in flight), and claims the result's addresses
// for the sandbox in the same step.
func (e *Executor) uniqueAddresses(sb *store.Sandbox, a *store.Attachment, res *current.Result) error {
	ips := make([]net.IP, len(res.IPs))
	for i, ip := range res.IPs {
		ips[i] = ip.Address.IP
	}
	conflict, err := e.store.Claim(holderOf(sb, a), ips)
	if err != nil {
		return fmt.Errorf("checking addresses %v: %w", ips, err)
	}
	if conflict != nil {
		return &AddressInUse{IP: conflict.IP, Holder: conflict.Holder}
	}
	return nil
}

func holderOf(sb *store.Sandbox, a *store.Attachment) store.Holder {
	return store.Holder{ContainerID: sb.ContainerID, IfName: a.IfName, Pod: sb.PodNamespace + "/" + sb.PodName, Network: a.Network}
}

// AddressInUse is returned when a delegate's IPAM hands out an address that
// another pod on this node holds (two IPAMs on one range, or a stale store):
// the attachment is rolled back instead of taking the address over.
type AddressInUse struct {
	IP     net.IP
	Holder store.Holder
}

func (a *AddressInUse) Error() string {
	return fmt.Sprintf("its IPAM handed out %s, which pod %s holds on this node (network %s, interface %s): "+
		"networks that allocate from one range must share one IPAM store", a.IP, a.Holder.Pod, a.Holder.Network, a.Holder.IfName)
}
