package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
)

// blockingExec is a plugin exec whose executions wait until release is
// closed; it records the most that ran at once.
type blockingExec struct {
	invoke.Exec
	release       chan struct{}
	running, most atomic.Int32
	started       chan struct{}
}

func (b *blockingExec) ExecPlugin(ctx context.Context, _ string, _ []byte, _ []string) ([]byte, error) {
	n := b.running.Add(1)
	for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
	}
	b.started <- struct{}{}
	<-b.release
	b.running.Add(-1)
	return []byte("{}"), nil
}

func TestLimited(t *testing.T) {
	for _, c := range []struct {
		limit, calls, wantMost int
	}{{2, 6, 2}, {1, 3, 1}, {0, 4, 4}, {-1, 4, 4}} {
		b := &blockingExec{release: make(chan struct{}), started: make(chan struct{}, c.calls)}
		exec := Limited(b, c.limit)
		var wg sync.WaitGroup
		for range c.calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := exec.ExecPlugin(context.Background(), "/x/bridge", nil, nil); err != nil {
					t.Error(err)
				}
			}()
		}
		for range c.wantMost { // the first wantMost start at once
			<-b.started
		}
		select { // a window for an execution over the limit to start; the assertion on most below is the check
		case <-b.started:
			t.Errorf("limit %d: more than %d ran at once", c.limit, c.wantMost)
		case <-time.After(50 * time.Millisecond):
		}
		close(b.release)
		wg.Wait()
		if got := int(b.most.Load()); got != c.wantMost {
			t.Errorf("limit %d, %d calls: at most %d ran at once, want %d", c.limit, c.calls, got, c.wantMost)
		}
	}
}

// A request waiting for a slot gives up with its context, and says why.
func TestLimitedWaitEndsWithContext(t *testing.T) {
	b := &blockingExec{release: make(chan struct{}), started: make(chan struct{}, 2)}
	defer close(b.release)
	exec := Limited(b, 1)
	go func() { _, _ = exec.ExecPlugin(context.Background(), "/x/bridge", nil, nil) }()
	<-b.started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := exec.ExecPlugin(ctx, "/x/macvlan", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting past the deadline: %v", err)
	}
}

// A request given up by its caller stops waiting for a slot although the
// delegate context is detached from the caller (delegateContext).
func TestLimitedWaitEndsWithCaller(t *testing.T) {
	b := &blockingExec{release: make(chan struct{}), started: make(chan struct{}, 2)}
	defer close(b.release)
	exec := Limited(b, 1)
	go func() { _, _ = exec.ExecPlugin(context.Background(), "/x/bridge", nil, nil) }()
	<-b.started
	caller, cancel := context.WithCancel(context.Background())
	ctx, stop := delegateContext(caller)
	defer stop()
	errc := make(chan error, 1)
	go func() { _, err := exec.ExecPlugin(ctx, "/x/macvlan", nil, nil); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting after the caller gave up: %v", err)
	}
}

// A free slot goes to the delegate of the oldest request, whatever the
// order the delegates queued in (a pod's second delegate before newer
// pods' first ones), and a request's own delegates in arrival order.
func TestLimitedServesOldestRequestFirst(t *testing.T) {
	b := &blockingExec{release: make(chan struct{}), started: make(chan struct{}, 8)}
	var mu sync.Mutex
	var order []string
	rec := &recordingExec{Exec: b, record: func(p string) { mu.Lock(); order = append(order, p); mu.Unlock() }}
	exec := Limited(rec, 1).(*limitedExec)
	go func() { _, _ = exec.ExecPlugin(context.Background(), "holder", nil, nil) }()
	<-b.started
	t0 := time.Now().Add(-time.Minute)
	var wg sync.WaitGroup
	for i, w := range []struct {
		plugin string
		age    time.Duration // the request's start after t0
	}{{"newest", 3}, {"oldest-a", 1}, {"middle", 2}, {"oldest-b", 1}} {
		ctx, busy := WithBusy(context.Background())
		busy.started = t0.Add(w.age * time.Second)
		wg.Go(func() {
			if _, err := exec.ExecPlugin(ctx, w.plugin, nil, nil); err != nil {
				t.Error(err)
			}
		})
		waitFor(t, func() bool { // queued in this order
			exec.slots.mu.Lock()
			defer exec.slots.mu.Unlock()
			return len(exec.slots.waiting) == i+1
		})
	}
	close(b.release)
	wg.Wait()
	want := []string{"holder", "oldest-a", "oldest-b", "middle", "newest"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("delegates ran in the order %v, want %v", order, want)
	}
}

// recordingExec records each execution's plugin path before running it.
type recordingExec struct {
	invoke.Exec
	record func(string)
}

func (r *recordingExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	r.record(path)
	return r.Exec.ExecPlugin(ctx, path, stdin, env)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
	}
}
