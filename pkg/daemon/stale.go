package daemon

import (
	"context"
	"errors"

	"github.com/rewire-cni/rewire/pkg/store"
)

// ReleaseStale releases a sandbox the container runtime no longer has
// (self-GC, pkg/selfgc) as the runtime's DEL for it would have: the
// executor's DEL of every recorded attachment (IPAM, interfaces, host-side
// changes, the record) and its device-info files. The pod's queued
// network-status is left alone: the pod may have a newer sandbox by now.
// It reports whether it released anything; false with no error when the
// record is gone or replaced by then (the runtime's own DEL came first).
// Like a DEL, it runs to the end once started.
func (d *Daemon) ReleaseStale(ctx context.Context, sb *store.Sandbox) (bool, error) {
	released, err := d.Exec.DelStale(context.WithoutCancel(ctx), sb.ContainerID, sb.Created)
	if !released {
		return false, err
	}
	if d.DevInfo != "" {
		err = errors.Join(err, d.DevInfo.CleanSandbox(sb.ContainerID))
	}
	return true, err
}
