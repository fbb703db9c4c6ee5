package executor

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/rewire-cni/rewire/pkg/metrics"
)

// Limited wraps a plugin exec so that at most n delegates execute at once
// (n <= 0: no limit). Delegates run as processes in rewired's cgroup, so a
// burst of pod ADDs would otherwise start one plugin process (and its IPAM
// plugin) per attachment at once and take the container past its memory
// limit; beyond n a request queues in rewired (a goroutine) instead, and
// only waits longer. A free slot goes to the delegate of the oldest
// request (WithBusy's start): a pod's later delegates do not queue behind
// every newer pod's first one, so in a burst pods complete one after the
// other instead of all at the end, and a request its runtime gives up on
// has usually not started anything yet. A wait ends with ctx (the delegate
// timeout) or when the request it runs for is given up (callerDone):
// nothing has started then. rewire_delegates_waiting shows the queue. A
// delegate that hangs holds its slot until the delegate timeout.
func Limited(exec invoke.Exec, n int) invoke.Exec {
	if n <= 0 {
		return exec
	}
	return &limitedExec{Exec: exec, slots: &slots{free: n, n: n}}
}

type limitedExec struct {
	invoke.Exec
	slots *slots
}

func (l *limitedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	if err := l.slots.acquire(ctx, requestStart(ctx)); err != nil {
		return nil, fmt.Errorf("waiting for one of %d delegate slots to run %s: %w", l.slots.n, pluginPath, err)
	}
	defer l.slots.release()
	return l.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
}

// requestStart is when the request ctx runs for began (now without one).
func requestStart(ctx context.Context) time.Time {
	if b, _ := ctx.Value(busyKey{}).(*Busy); b != nil {
		return b.started
	}
	return time.Now()
}

// slots is a counting semaphore whose waiters are served oldest request
// first (then in arrival order).
type slots struct {
	mu      sync.Mutex
	free, n int
	arrived uint64
	waiting waiters
}

type waiter struct {
	started time.Time
	order   uint64
	granted chan struct{}
	index   int
}

func (s *slots) acquire(ctx context.Context, started time.Time) error {
	s.mu.Lock()
	if s.free > 0 && len(s.waiting) == 0 {
		s.free--
		s.mu.Unlock()
		return nil
	}
	s.arrived++
	w := &waiter{started: started, order: s.arrived, granted: make(chan struct{})}
	heap.Push(&s.waiting, w)
	s.mu.Unlock()
	metrics.DelegatesWaiting.Add(1)
	defer metrics.DelegatesWaiting.Add(-1)
	var err error
	select {
	case <-w.granted:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-callerDone(ctx):
		err = context.Canceled // the runtime gave up; nothing has started
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-w.granted: // granted meanwhile: pass the slot on
		s.releaseLocked()
	default:
		heap.Remove(&s.waiting, w.index)
	}
	return err
}

func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *slots) releaseLocked() {
	if len(s.waiting) == 0 {
		s.free++
		return
	}
	close(heap.Pop(&s.waiting).(*waiter).granted)
}

// waiters is a heap of waiters, the oldest request first.
type waiters []*waiter

func (h waiters) Len() int { return len(h) }
func (h waiters) Less(i, j int) bool {
	if !h[i].started.Equal(h[j].started) {
		return h[i].started.Before(h[j].started)
	}
	return h[i].order < h[j].order
}
func (h waiters) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *waiters) Push(x any)   { w := x.(*waiter); w.index = len(*h); *h = append(*h, w) }
func (h *waiters) Pop() any {
	old := *h
	w := old[len(old)-1]
	*h = old[:len(old)-1]
	return w
}
