package executor

import (
	"cmp"
	"encoding/json"
	"net"
	"os"
	"slices"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/store"
)

// recordHostChanges keeps what a switch changed on a host bridge for this
// sandbox. A sysctl that another sandbox's switch turned on counts as
// Rewire's here too, so it stays on until the last sandbox needing it goes.
// The caller holds e.hostMu since before the change.
func (e *Executor) recordHostChanges(sb *store.Sandbox, c handover.HostChanges) {
	others := e.othersHostChanges(sb.ContainerID, c.Bridge)
	c.ProxyARP = c.ProxyARP || others.ProxyARP
	c.ProxyNDP = c.ProxyNDP || others.ProxyNDP
	c.ProxyDelay = cmp.Or(c.ProxyDelay, others.ProxyDelay)
	if !c.ProxyARP && !c.ProxyNDP && len(c.ProxyNeigh) == 0 && c.ProxyDelay == "" {
		return
	}
	sb.HostChanges = append(sb.HostChanges, c)
	e.noteHostChanges(sb)
}

// undoHostChanges undoes the host changes recorded for the sandbox, keeping
// the bridge sysctls other sandboxes still need. The caller stores sb.
func (e *Executor) undoHostChanges(sb *store.Sandbox) {
	if len(sb.HostChanges) == 0 {
		return
	}
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	for _, c := range sb.HostChanges {
		others := e.othersHostChanges(sb.ContainerID, c.Bridge)
		keepARP := others.ProxyARP || others.ProxyDelay != ""
		if err := handover.UndoHostChanges(c, keepARP, others.ProxyNDP); err != nil {
			e.sbLog(sb).Warn("undoing host changes of a switch", "bridge", c.Bridge, "err", err)
		}
	}
	sb.HostChanges = nil
	e.noteHostChanges(sb)
}

// noteHostChanges makes sb's host changes count for other sandboxes at once,
// not from its next write: two sandboxes leaving a bridge together would
// each see the other still needing its sysctls and both keep them.
func (e *Executor) noteHostChanges(sb *store.Sandbox) {
	if err := e.store.NoteHostChanges(sb.ContainerID, sb.HostChanges); err != nil {
		e.sbLog(sb).Warn("noting host changes", "err", err)
	}
}

// othersHostChanges sums the sysctls that other sandboxes' records turned on
// for bridge.
func (e *Executor) othersHostChanges(containerID, bridge string) handover.HostChanges {
	var sum handover.HostChanges
	changes, err := e.store.HostChanges(containerID)
	if err != nil {
		return sum
	}
	for _, c := range changes {
		if c.Bridge == bridge {
			sum.ProxyARP = sum.ProxyARP || c.ProxyARP
			sum.ProxyNDP = sum.ProxyNDP || c.ProxyNDP
			sum.ProxyDelay = cmp.Or(sum.ProxyDelay, c.ProxyDelay)
		}
	}
	return sum
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
	var bridges []string
	for _, name := range hostLinks(old) {
		if isBridge(name) {
			bridges = append(bridges, name)
		}
	}
	e.proxyOn(sb, podIPs(new), hostLinks(new), bridges)
	if err := handover.WithdrawHostRoutes(ips, hostLinks(new)); err != nil {
		e.sbLog(sb).Warn("withdrawing host routes of the old primary", "err", err)
	}
}

// proxyOn makes the host answer ARP/NDP for an attachment's addresses ips
// on the bridges given and, when the host routes it (host links, none a
// bridge), on
// every host bridge whose subnet holds them: pods on such a bridge see the whole subnet as
// on-link, so they reach a pod of this node routed behind the host (a
// switched pod, or one started on a routed network) only if the host
// answers for it, from the first packet. What it turns on is recorded in
// the sandbox (undone when nothing needs it). Failures are logged.
func (e *Executor) proxyOn(sb *store.Sandbox, ips []net.IP, links, bridges []string) {
	if len(links) > 0 && !slices.ContainsFunc(links, isBridge) {
		holding, err := handover.BridgesHolding(ips)
		if err != nil {
			e.sbLog(sb).Warn("finding the bridges on the subnets of a routed pod", "err", err)
		}
		bridges = append(bridges, holding...)
	}
	for i, name := range bridges {
		if !slices.Contains(bridges[:i], name) {
			e.proxyOnBridge(sb, ips, name)
		}
	}
}

// proxyOnBridge is proxyOn for one bridge.
func (e *Executor) proxyOnBridge(sb *store.Sandbox, ips []net.IP, bridge string) {
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	c, err := handover.ProxyNeighbours(bridge, ips)
	if err != nil {
		e.sbLog(sb).Warn("proxying ARP/NDP for a routed pod's addresses", "bridge", bridge, "err", err)
	}
	e.recordHostChanges(sb, c)
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

// hostLinks are the host-side interfaces in an attachment's result.
func hostLinks(a *store.Attachment) []string {
	var res current.Result
	if err := json.Unmarshal(a.Result, &res); err != nil {
		return nil
	}
	return resultHostLinks(&res)
}

// resultHostLinks are the host-side interfaces of a result.
func resultHostLinks(res *current.Result) []string {
	var links []string
	for _, iface := range res.Interfaces {
		if iface.Sandbox == "" {
			links = append(links, iface.Name)
		}
	}
	return links
}

func isBridge(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name + "/bridge")
	return err == nil
}
