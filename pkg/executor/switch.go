package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/reservation"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/pkg/store"
)

// SwitchRefused is returned when a switch cannot be done at all; nothing
// was changed.
type SwitchRefused struct{ Reason string }

func (s *SwitchRefused) Error() string { return "switch refused: " + s.Reason }

// SwitchOptions choose how a switch hands over.
type SwitchOptions struct {
	// Readdress gives the new network its own addresses instead of the
	// pod's: connections on the old addresses keep flowing through the old
	// interface (a source rule) until none is left or DrainTimeout passed,
	// while new connections use the new network.
	Readdress    bool
	DrainTimeout time.Duration
}

// Draining is returned by Switch and ResumeSwitch while a re-addressing
// switch waits for the connections on the old addresses: the pod works on
// the new network; call ResumeSwitch again later.
type Draining struct {
	Connections int
	Until       time.Time
}

func (d *Draining) Error() string {
	return fmt.Sprintf("draining: %d connections on the old addresses, at most until %s", d.Connections, d.Until.Format(time.RFC3339))
}

// SwitchAborted is returned when a switch failed before the cut-over and was
// undone: the pod is still on its old primary network.
type SwitchAborted struct{ Err error }

func (s *SwitchAborted) Error() string {
	return fmt.Sprintf("switch failed before the cut-over, the pod stays on its primary network: %v", s.Err)
}
func (s *SwitchAborted) Unwrap() error { return s.Err }

// Switch moves the sandbox's primary network to spec without a restart,
// keeping the primary IP addresses (make-before-break); the caller holds
// Lock. The pod's routing is pinned in a side table, the new network is
// added under a temporary interface name holding the same addresses (see
// claim), traffic is cut over by removing the pin rule, the addresses are
// announced, the old attachment is retired (its interface deleted with its
// exact config, its IPAM reservation kept until the pod's DEL: see Retire),
// and the new interface takes its name.
//
// Before the new network is added, any failure is undone (SwitchAborted).
// After it, the switch only goes forward: an error leaves the pod on the new
// network with the rest recorded for ResumeSwitch. With opts.Readdress the
// old attachment stays until its connections are drained (Draining).
func (e *Executor) Switch(ctx context.Context, sb *store.Sandbox, spec attachment.Spec, opts SwitchOptions) (*current.Result, error) {
	if sb.Switch != nil {
		return nil, errors.New("a switch of this pod is still being finished")
	}
	from := sb.Primary()
	if from == nil || from.State != store.Added {
		return nil, &SwitchRefused{Reason: "the pod has no primary attachment recorded"}
	}
	ips, err := podAddresses(from)
	if err != nil {
		return nil, err
	}
	if err := e.canHold(from); err != nil {
		return nil, err
	}
	var pinFrom []net.IP
	if opts.Readdress {
		pinFrom = podIPs(from)
		spec.CapabilityArgs = withIPs(from.CapabilityArgs, nil)
	} else if err := claim(sb, &spec, from, ips); err != nil {
		return nil, err
	}
	spec.IfName, spec.LinkName, spec.Primary = tempName(sb), "", false
	sb.Switch = &store.Switch{From: from.IfName, To: spec.IfName, Readdress: opts.Readdress}
	if opts.Readdress {
		sb.Switch.DrainUntil = time.Now().Add(opts.DrainTimeout)
	}
	sb.Attachments = append(sb.Attachments, store.Attachment{Spec: spec, State: store.Adding})
	if err := e.store.Put(sb); err != nil {
		sb.Switch = nil
		sb.Remove(spec.IfName)
		return nil, err
	}
	res, err := e.pinAndAdd(ctx, sb, from.Link(), pinFrom)
	if err != nil {
		if aerr := e.abortSwitch(context.WithoutCancel(ctx), sb); aerr != nil {
			return nil, fmt.Errorf("%w; undoing it: %v", err, aerr)
		}
		return nil, &SwitchAborted{Err: err}
	}
	return res, e.finishSwitch(context.WithoutCancel(ctx), sb)
}

// ResumeSwitch finishes a switch a crash or an error interrupted: it is
// undone when the new network was never fully added, finished otherwise.
// The caller holds Lock.
func (e *Executor) ResumeSwitch(ctx context.Context, sb *store.Sandbox) error {
	if sb.Switch == nil {
		return nil
	}
	if to := sb.Find(sb.Switch.To); to == nil || to.State != store.Added {
		e.sbLog(sb).Info("undoing interrupted switch", "to", sb.Switch.To)
		return e.abortSwitch(ctx, sb)
	}
	e.sbLog(sb).Info("finishing interrupted switch", "from", sb.Switch.From, "to", sb.Switch.To)
	return e.finishSwitch(ctx, sb)
}

// pinAndAdd pins the old primary's routes and adds the new network. On
// success the new attachment becomes the primary (the commit point).
func (e *Executor) pinAndAdd(ctx context.Context, sb *store.Sandbox, oldLink string, from []net.IP) (*current.Result, error) {
	e.sbLog(sb).Debug("switch step", "step", "switch:pin")
	if err := e.fault("switch:pin"); err != nil {
		return nil, err
	}
	if err := handover.Pin(sb.NetNS, oldLink, from...); err != nil {
		return nil, fmt.Errorf("pinning the routes of %s: %w", oldLink, err)
	}
	to := sb.Find(sb.Switch.To)
	// The new copies of the kept IPv6 addresses must not fail DAD against
	// the old interface, which still holds them.
	restoreDAD, err := handover.DisableDAD(sb.NetNS)
	if err != nil {
		return nil, err
	}
	res, err := e.addOne(ctx, sb, to, sb.Args)
	if rerr := restoreDAD(); rerr != nil {
		e.sbLog(sb).Warn("restoring the pod's accept_dad", "err", rerr)
	}
	if err != nil {
		return nil, &AttachError{Network: to.Network, IfName: to.IfName, Err: err}
	}
	if to.Result, err = res.MarshalJSON(); err != nil {
		return nil, err
	}
	if err := e.keptAll(sb, to); err != nil {
		return nil, err
	}
	if !sb.Switch.Readdress {
		// Inbound traffic stays on the old network until the cut-over.
		from := sb.Find(sb.Switch.From)
		sb.Switch.Parked, err = handover.ParkHostRoutes(podIPs(from), hostLinks(to))
		if err != nil {
			return nil, fmt.Errorf("holding back the host routes of %s: %w", to.Network, err)
		}
	}
	to.State, to.Primary = store.Added, true
	sb.Find(sb.Switch.From).Primary = false
	return res, e.Reorder(sb, nil) // stores the record, the new primary first
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

// abortSwitch deletes the new attachment and gives the old one its routes
// back. A failure keeps the switch recorded (retried by ResumeSwitch).
func (e *Executor) abortSwitch(ctx context.Context, sb *store.Sandbox) error {
	if to := sb.Find(sb.Switch.To); to != nil {
		if from := sb.Find(sb.Switch.From); from != nil && !sb.Switch.Readdress {
			// Inbound traffic back to the old primary before the new link goes.
			if err := handover.WithdrawHostRoutes(podIPs(from), hostLinks(from)); err != nil {
				e.sbLog(sb).Warn("withdrawing host routes of the new primary", "err", err)
			}
		}
		if err := e.delOne(ctx, sb, to, sb.NetNS, sb.Args); err != nil {
			return &AttachError{Network: to.Network, IfName: to.IfName, Err: err}
		}
		sb.Remove(sb.Switch.To)
	}
	if err := handover.Unpin(sb.NetNS); err != nil {
		return errors.Join(err, e.store.Put(sb))
	}
	if from := sb.Find(sb.Switch.From); from != nil {
		from.Primary = true
	}
	sb.Switch = nil
	return e.store.Put(sb)
}

// finishSwitch cuts traffic over to the new primary, deletes the old one and
// renames the new interface. Each step is idempotent.
func (e *Executor) finishSwitch(ctx context.Context, sb *store.Sandbox) error {
	to := sb.Find(sb.Switch.To)
	if sb.Switch.Readdress {
		if err := e.drained(sb); err != nil {
			return err
		}
	}
	e.sbLog(sb).Debug("switch step", "step", "switch:cut")
	if err := e.fault("switch:cut"); err != nil {
		return err
	}
	e.settle(sb, to)
	if err := handover.RestoreHostRoutes(sb.Switch.Parked); err != nil {
		return fmt.Errorf("routing the kept addresses to %s: %w", to.Network, err)
	}
	if err := handover.Cut(sb.NetNS); err != nil {
		return fmt.Errorf("cutting over to %s: %w", to.Network, err)
	}
	if from := sb.Find(sb.Switch.From); from != nil && !sb.Switch.Readdress {
		if err := handover.Announce(sb.NetNS, to.Link(), podIPs(to)); err != nil {
			e.sbLog(sb).Warn("announcing the kept addresses", "err", err)
		}
		e.handOffHost(sb, from, to)
	}
	e.sbLog(sb).Debug("switch step", "step", "switch:cut-over")
	if err := e.fault("switch:cut-over"); err != nil {
		return err
	}
	if from := sb.Find(sb.Switch.From); from != nil {
		if err := e.Retire(ctx, sb, from.IfName); err != nil {
			return fmt.Errorf("the pod works on %s; deleting the old primary: %w", to.Network, err)
		}
		to = sb.Find(sb.Switch.To)
	}
	e.sbLog(sb).Debug("switch step", "step", "switch:renaming")
	if err := e.fault("switch:renaming"); err != nil {
		return err
	}
	if to.LinkName == "" {
		to.LinkName = sb.IfName
		if err := e.store.Put(sb); err != nil {
			return err
		}
	}
	if err := handover.Rename(sb.NetNS, to.IfName, to.LinkName); err != nil {
		return fmt.Errorf("the pod works on %s; naming its interface: %w", to.Network, err)
	}
	sb.Switch = nil
	return e.Reorder(sb, nil)
}

// SettleTimeout bounds the wait for the new primary's IPv6 addresses to
// finish duplicate address detection before the cut-over.
const SettleTimeout = 5 * time.Second

// settle waits, when the pod has IPv6 addresses, until no IPv6 address of
// the new primary, in the pod or on the host-side link that routes them
// (link-local ones included: neighbour discovery needs them), is tentative: traffic cut over to an address still in
// DAD is dropped. Traffic keeps flowing through the old primary meanwhile.
// A timeout is logged and the switch goes on.
func (e *Executor) settle(sb *store.Sandbox, to *store.Attachment) {
	var v6 []net.IP
	for _, ip := range podIPs(to) {
		if ip.To4() == nil {
			v6 = append(v6, ip)
		}
	}
	if len(v6) == 0 {
		return
	}
	if err := handover.WaitSettled(sb.NetNS, to.Link(), SettleTimeout); err != nil {
		e.sbLog(sb).Warn("new primary's addresses not settled", "err", err)
	}
	// The host-side links of the new network that route the addresses (a
	// routed network's veth, whose routes are parked; a bridge), not every
	// bridge port.
	var links []string
	for _, r := range sb.Switch.Parked {
		links = append(links, r.Link)
	}
	if err := handover.SkipDAD(links); err != nil {
		e.sbLog(sb).Warn("ending DAD on the new primary's host-side links", "err", err)
	}
	for _, l := range handover.RoutedVia(v6) {
		if slices.Contains(hostLinks(to), l) {
			links = append(links, l)
		}
	}
	if err := handover.HostWaitSettled(links, SettleTimeout); err != nil {
		e.sbLog(sb).Warn("new primary's host-side addresses not settled", "err", err)
	}
}

// drained returns a Draining error while connections use the old
// attachment's addresses and the drain timeout has not passed.
func (e *Executor) drained(sb *store.Sandbox) error {
	from := sb.Find(sb.Switch.From)
	if from == nil {
		return nil
	}
	n, err := handover.Connections(sb.NetNS, podIPs(from))
	if err != nil {
		return err
	}
	if n > 0 && time.Now().Before(sb.Switch.DrainUntil) {
		return &Draining{Connections: n, Until: sb.Switch.DrainUntil}
	}
	if n > 0 {
		e.sbLog(sb).Info("drain timeout: removing the old primary with connections open", "connections", n)
	}
	return nil
}

// handOffHost prepares the host for the old primary's removal: neighbours
// on its bridge are answered by the host for the moved addresses (see
// handover.ProxyNeighbours; what it turns on is recorded in the sandbox
// and undone when nothing needs it), and host routes to them other than the
// new primary's are withdrawn so that inbound traffic takes the new route
// before the old link goes (see handover.WithdrawHostRoutes). Failures are
// logged: the switch itself is done.
func (e *Executor) handOffHost(sb *store.Sandbox, old, new *store.Attachment) {
	e.undoHostChanges(sb) // a switch back: the bridge may hold the addresses again
	ips := podIPs(old)
	for _, name := range hostLinks(old) {
		if !isBridge(name) {
			continue
		}
		c, err := handover.ProxyNeighbours(name, ips)
		if err != nil {
			e.sbLog(sb).Warn("proxying ARP/NDP for moved addresses", "bridge", name, "err", err)
		}
		e.recordHostChanges(sb, c)
	}
	if err := handover.WithdrawHostRoutes(ips, hostLinks(new)); err != nil {
		e.sbLog(sb).Warn("withdrawing host routes of the old primary", "err", err)
	}
}

// hostLinks are the host-side interfaces in an attachment's result.
func hostLinks(a *store.Attachment) []string {
	var res current.Result
	if err := json.Unmarshal(a.Result, &res); err != nil {
		return nil
	}
	var links []string
	for _, iface := range res.Interfaces {
		if iface.Sandbox == "" {
			links = append(links, iface.Name)
		}
	}
	return links
}

// podAddresses returns the addresses of the attachment's pod interface.
func podAddresses(a *store.Attachment) ([]*net.IPNet, error) {
	res, err := storedResult(a)
	if err != nil {
		return nil, err
	}
	var out []*net.IPNet
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface < len(res.Interfaces) && res.Interfaces[*ip.Interface].Name != a.IfName {
			continue
		}
		ipn := ip.Address
		out = append(out, &ipn)
	}
	if len(out) == 0 {
		return nil, &SwitchRefused{Reason: fmt.Sprintf("the primary network %s gave the pod no IP address to keep", a.Network)}
	}
	return out, nil
}

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
	list, err := spec.ConfList()
	if err != nil {
		return &SwitchRefused{Reason: err.Error()}
	}
	if !nad.Capabilities(list)["ips"] {
		return &SwitchRefused{Reason: fmt.Sprintf("network %s cannot take over %v: none of its plugins declares the \"ips\" capability "+
			"(add \"capabilities\":{\"ips\":true} to the plugin carrying its IPAM, give it the same IPAM pool as %s, "+
			"or switch with %s: readdress)", spec.Network, ips, from.Network, selection.SwitchModeAnnotation)}
	}
	if nets, known := reservation.Ranges(spec.Config); known {
		if out := reservation.Outside(nets, ipsOf(ips)); len(out) > 0 {
			return &SwitchRefused{Reason: fmt.Sprintf("network %s cannot take over %v: its IPAM ranges %v do not contain it "+
				"(add a range holding it, or switch with %s: readdress)", spec.Network, out, nets, selection.SwitchModeAnnotation)}
		}
	}
	spec.CapabilityArgs = withIPs(from.CapabilityArgs, ips)
	return nil
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

// canHold refuses a switch whose old primary could not be retired: keeping
// its reservation needs the reference static IPAM plugin in the bin dirs.
func (e *Executor) canHold(from *store.Attachment) error {
	if _, ok, _ := reservation.ReleaseOnly(from.Config); !ok {
		return nil
	}
	cfg, ok := e.cni.(*libcni.CNIConfig)
	if !ok {
		return nil
	}
	if _, err := invoke.FindInPath(reservation.StaticType, cfg.Path); err != nil {
		return &SwitchRefused{Reason: fmt.Sprintf("keeping the pod's addresses reserved in %s needs the reference %q IPAM plugin in %v",
			from.Network, reservation.StaticType, cfg.Path)}
	}
	return nil
}

func ipsOf(nets []*net.IPNet) []net.IP {
	out := make([]net.IP, len(nets))
	for i, n := range nets {
		out[i] = n.IP
	}
	return out
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

// tempName is the first of rwsw0…rwsw9 that no attachment of the sandbox
// uses as CNI or link name.
func tempName(sb *store.Sandbox) string {
	used := map[string]bool{sb.IfName: true}
	for _, a := range sb.Attachments {
		used[a.IfName], used[a.Link()] = true, true
	}
	for i := 0; ; i++ {
		if name := fmt.Sprintf("rwsw%d", i); !used[name] {
			return name
		}
	}
}

// Addresses are the pod interface's addresses (CIDR notation) in an
// attachment's result.
func Addresses(a *store.Attachment) []string {
	nets, _ := podAddresses(a)
	out := make([]string, len(nets))
	for i, n := range nets {
		out[i] = n.String()
	}
	return out
}

func podIPs(a *store.Attachment) []net.IP {
	nets, _ := podAddresses(a)
	return ipsOf(nets)
}

// storedResult decodes an attachment's recorded result.
func storedResult(a *store.Attachment) (*current.Result, error) {
	res := &current.Result{}
	if err := json.Unmarshal(a.Result, res); err != nil {
		return nil, fmt.Errorf("stored result of %s: %w", a.IfName, err)
	}
	return res, nil
}

func isBridge(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name + "/bridge")
	return err == nil
}
