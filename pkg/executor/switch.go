package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/leancni"
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
	// CutOver, when set, is called once the pod's traffic runs on the new
	// network (before the old attachment is retired and the new interface
	// renamed, which Switch still does before it returns).
	CutOver func()
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
// claim), the pod and the host get each other's MAC on it (so that the
// first packets after the cut-over need no neighbour resolution), traffic
// is cut over by removing the pin rule, the addresses are announced, the old attachment is retired (its interface deleted with its
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
	return res, e.finishSwitch(context.WithoutCancel(ctx), sb, opts.CutOver)
}

// ResumeSwitch finishes a switch a crash or an error interrupted: it is
// undone when the new network was never fully added, finished otherwise.
// The caller holds Lock.
func (e *Executor) ResumeSwitch(ctx context.Context, sb *store.Sandbox) error {
	if sb.Switch == nil {
		return nil
	}
	e.restoreDAD(sb)
	if to := sb.Find(sb.Switch.To); to == nil || to.State != store.Added {
		e.sbLog(sb).Info("undoing interrupted switch", "to", sb.Switch.To)
		return e.abortSwitch(ctx, sb)
	}
	e.sbLog(sb).Info("finishing interrupted switch", "from", sb.Switch.From, "to", sb.Switch.To)
	return e.finishSwitch(ctx, sb, nil)
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
	if err := e.disableDAD(sb); err != nil {
		return nil, err
	}
	unlock := e.allocs.lock(storeKey(to.Config), requestAlloc)
	res, err := e.addOne(ctx, sb, to, sb.Args)
	unlock()
	e.restoreDAD(sb)
	if err != nil {
		return nil, &AttachError{Network: to.Network, IfName: to.IfName, Err: err}
	}
	if to.Result, err = leancni.EncodeResult(res); err != nil {
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
	// The commit point of the switch: written, not synced. A power loss
	// ends the pod too, and its DEL finds both attachments either way.
	sortAttachments(sb, nil)
	return res, e.store.Put(sb)
}

// disableDAD turns duplicate address detection off in the pod for B's
// ADD (the new copies of the kept IPv6 addresses must not fail it against
// the old interface), recording the values first: a crash meanwhile is
// undone by ResumeSwitch.
func (e *Executor) disableDAD(sb *store.Sandbox) error {
	on, err := handover.DADOn(sb.NetNS)
	if err != nil || len(on) == 0 {
		return err
	}
	sb.Switch.DAD = on
	if err := e.store.Put(sb); err != nil {
		return err
	}
	if err := handover.SetSysctls(sb.NetNS, handover.DADOff(on)); err != nil {
		e.restoreDAD(sb)
		return fmt.Errorf("disabling duplicate address detection: %w", err)
	}
	return nil
}

// restoreDAD writes back what disableDAD recorded (the record is written
// by the switch's next step).
func (e *Executor) restoreDAD(sb *store.Sandbox) {
	if err := handover.SetSysctls(sb.NetNS, sb.Switch.DAD); err != nil {
		e.sbLog(sb).Warn("restoring the pod's accept_dad", "err", err)
		return
	}
	sb.Switch.DAD = nil
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

// finishSwitch cuts traffic over to the new primary (then calls cutOver if
// set), deletes the old one and renames the new interface. Each step is
// idempotent.
func (e *Executor) finishSwitch(ctx context.Context, sb *store.Sandbox, cutOver func()) error {
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
	if err := handover.SeedNeighbours(sb.NetNS, to.Link(), podIPs(to), hostLinks(to)); err != nil {
		e.sbLog(sb).Warn("giving the pod and the host each other's MAC on the new primary", "err", err)
	}
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
	if cutOver != nil {
		cutOver()
	}
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

// podAddresses returns the addresses of the attachment's pod interface.
func podAddresses(a *store.Attachment) ([]*net.IPNet, error) {
	res, err := storedResult(a)
	if err != nil {
		return nil, err
	}
	out := resultAddresses(a, res)
	if len(out) == 0 {
		return nil, &SwitchRefused{Reason: fmt.Sprintf("the primary network %s gave the pod no IP address to keep", a.Network)}
	}
	return out, nil
}

// resultAddresses are the addresses of the attachment's pod interface in
// its result.
func resultAddresses(a *store.Attachment, res *current.Result) []*net.IPNet {
	var out []*net.IPNet
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface < len(res.Interfaces) && res.Interfaces[*ip.Interface].Name != a.IfName {
			continue
		}
		ipn := ip.Address
		out = append(out, &ipn)
	}
	return out
}

// resultIPs are resultAddresses without their prefixes.
func resultIPs(a *store.Attachment, res *current.Result) []net.IP {
	return ipsOf(resultAddresses(a, res))
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
