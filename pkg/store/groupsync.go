package store

import "sync"

// groupSync runs a sync function for many callers at once (group commit):
// a caller returns once a sync that started after it called has finished,
// so one fsync covers every caller that arrived while the previous one ran.
type groupSync struct {
	mu      sync.Mutex
	cond    sync.Cond
	running bool
	started uint64 // generations started
	done    uint64 // generations finished
	err     error  // of the last finished generation
	// Syncs counts the sync calls actually made (for tests and metrics),
	// calls the callers of do.
	Syncs, calls uint64
}

func (g *groupSync) do(sync func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cond.L == nil {
		g.cond.L = &g.mu
	}
	g.calls++
	// A sync already running may have started before our write: only one
	// started from now on (generation started+1) covers it.
	need := g.started + 1
	for g.done < need {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		g.Syncs++
		g.mu.Unlock()
		err := sync()
		g.mu.Lock()
		g.running, g.done, g.err = false, g.started, err
		g.cond.Broadcast()
	}
	return g.err
}

// syncs returns how many syncs were made so far.
func (g *groupSync) syncs() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.Syncs
}

// callers returns how many calls of do were made so far.
func (g *groupSync) callers() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}
