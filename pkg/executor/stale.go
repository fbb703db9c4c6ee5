package executor

import (
	"context"
	"time"
)

// DelStale deletes a sandbox the container runtime no longer has, exactly
// as the runtime's DEL would (Del: every attachment, its IPAM, host-side
// changes and the record), but only while its record is still the one the
// caller judged stale: complete and created at created. It reports whether
// it deleted; false with no error when the record is gone or is another
// one by now (the runtime's own DEL came first, or an ADD runs).
func (e *Executor) DelStale(ctx context.Context, containerID string, created time.Time) (bool, error) {
	unlock, err := e.LockContext(ctx, containerID)
	if err != nil {
		return false, err
	}
	defer unlock()
	sb, err := e.store.Get(containerID)
	if err != nil || sb == nil || !sb.Complete || !sb.Created.Equal(created) {
		return false, err
	}
	e.unindexPod(containerID)
	return true, e.delLocked(ctx, containerID, "", nil)
}
