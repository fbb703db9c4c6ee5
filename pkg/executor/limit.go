package executor

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/rewire-cni/rewire/pkg/metrics"
)

// Limited wraps a plugin exec so that at most n delegates execute at once
// (n <= 0: no limit). Delegates run as processes in rewired's cgroup, so a
// burst of pod ADDs would otherwise start one plugin process (and its IPAM
// plugin) per attachment at once and take the container past its memory
// limit; beyond n a request queues in rewired (a goroutine) instead, and
// only waits longer. A wait ends with ctx (the delegate timeout) or when
// the request it runs for is given up (callerDone): nothing has started
// then. rewire_delegates_waiting shows the queue. A delegate that hangs
// holds its slot until the delegate timeout: the cap is off by default.
func Limited(exec invoke.Exec, n int) invoke.Exec {
	if n <= 0 {
		return exec
	}
	return limitedExec{Exec: exec, slots: make(chan struct{}, n)}
}

type limitedExec struct {
	invoke.Exec
	slots chan struct{}
}

func (l limitedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		metrics.DelegatesWaiting.Add(1)
		var err error
		select {
		case l.slots <- struct{}{}:
		case <-ctx.Done():
			err = ctx.Err()
		case <-callerDone(ctx):
			err = context.Canceled // the runtime gave up; nothing has started
		}
		metrics.DelegatesWaiting.Add(-1)
		if err != nil {
			return nil, fmt.Errorf("waiting for one of %d delegate slots to run %s: %w", cap(l.slots), pluginPath, err)
		}
	}
	defer func() { <-l.slots }()
	return l.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
}
