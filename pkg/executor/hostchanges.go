package executor

import (
	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/store"
)

// recordHostChanges keeps what a switch changed on a host bridge for this
// sandbox. A sysctl that another sandbox's switch turned on counts as
// Rewire's here too, so it stays on until the last sandbox needing it goes.
func (e *Executor) recordHostChanges(sb *store.Sandbox, c handover.HostChanges) {
	others := e.othersHostChanges(sb.ContainerID, c.Bridge)
	c.ProxyARP = c.ProxyARP || others.ProxyARP
	c.ProxyNDP = c.ProxyNDP || others.ProxyNDP
	if !c.ProxyARP && !c.ProxyNDP && len(c.ProxyNeigh) == 0 {
		return
	}
	sb.HostChanges = append(sb.HostChanges, c)
}

// undoHostChanges undoes the host changes recorded for the sandbox, keeping
// the bridge sysctls other sandboxes still need. The caller stores sb.
func (e *Executor) undoHostChanges(sb *store.Sandbox) {
	for _, c := range sb.HostChanges {
		others := e.othersHostChanges(sb.ContainerID, c.Bridge)
		if err := handover.UndoHostChanges(c, others.ProxyARP, others.ProxyNDP); err != nil {
			e.sbLog(sb).Warn("undoing host changes of a switch", "bridge", c.Bridge, "err", err)
		}
	}
	sb.HostChanges = nil
}

// othersHostChanges sums the sysctls that other sandboxes' records turned on
// for bridge.
func (e *Executor) othersHostChanges(containerID, bridge string) handover.HostChanges {
	var sum handover.HostChanges
	ids, err := e.store.IDs()
	if err != nil {
		return sum
	}
	for _, id := range ids {
		if id == containerID {
			continue
		}
		other, err := e.store.Get(id)
		if err != nil || other == nil {
			continue
		}
		for _, c := range other.HostChanges {
			if c.Bridge == bridge {
				sum.ProxyARP = sum.ProxyARP || c.ProxyARP
				sum.ProxyNDP = sum.ProxyNDP || c.ProxyNDP
			}
		}
	}
	return sum
}
