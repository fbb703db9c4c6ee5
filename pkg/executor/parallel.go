package executor

import (
	"context"
	"sync"

	"github.com/rewire-cni/rewire/pkg/store"
)

type parallelKey struct{}

// WithParallel returns ctx telling ADD and DEL (and an ADD's rollback)
// whether attachments to different networks may run at the same time
// (the daemon's parallelAttach).
func WithParallel(ctx context.Context, parallel bool) context.Context {
	return context.WithValue(ctx, parallelKey{}, parallel)
}

func parallelFrom(ctx context.Context) bool {
	p, _ := ctx.Value(parallelKey{}).(bool)
	return p
}

// waves orders the attachments of a record (indexes into sb.Attachments,
// in record order) for ADD: each wave runs after the previous one has
// finished, the lanes of a wave run at the same time, and the attachments
// of one lane run one after the other in the order given. Sequentially
// there is one wave of one lane holding every attachment. In parallel the
// primary (the cluster network: NPWG attaches it before any other network)
// is a wave of its own, then every network gets a lane of its own, holding
// its attachments in annotation order (two attachments of one network are
// never concurrent).
func waves(sb *store.Sandbox, parallel bool) [][][]int {
	all := make([]int, len(sb.Attachments))
	for i := range all {
		all[i] = i
	}
	if !parallel || len(all) < 2 {
		return [][][]int{{all}}
	}
	var out [][][]int
	rest := all
	if sb.Attachments[0].Primary {
		out = append(out, [][]int{{0}})
		rest = all[1:]
	}
	var lanes [][]int
	lane := map[string]int{}
	for _, i := range rest {
		n := sb.Attachments[i].Network
		l, ok := lane[n]
		if !ok {
			l = len(lanes)
			lane[n] = l
			lanes = append(lanes, nil)
		}
		lanes[l] = append(lanes[l], i)
	}
	return append(out, lanes)
}

// delWaves is the DEL order: ADD's waves reversed, each lane newest first
// (the secondaries before the primary). A record a live switch touched
// (renamed links, retained reservations, a switch in progress) and one
// without a primary (rebuilt from libcni's cache) are deleted one
// attachment at a time, newest first, as before.
func delWaves(sb *store.Sandbox, parallel bool) [][][]int {
	if len(sb.Attachments) == 0 || !sb.Attachments[0].Primary || sb.Switch != nil {
		parallel = false
	}
	if parallel {
		for _, a := range sb.Attachments {
			if a.State == store.Retained || a.LinkName != "" && a.LinkName != a.IfName {
				parallel = false
			}
		}
	}
	w := waves(sb, parallel)
	out := make([][][]int, 0, len(w))
	for i := len(w) - 1; i >= 0; i-- {
		lanes := make([][]int, len(w[i]))
		for j, l := range w[i] {
			r := make([]int, len(l))
			for k, idx := range l {
				r[len(l)-1-k] = idx
			}
			lanes[j] = r
		}
		out = append(out, lanes)
	}
	return out
}

// runWaves runs step for every index of the waves (lanes concurrently).
// With stopOnError, the first failure stops what has not started yet
// (what runs finishes); without, every step is attempted. It returns the
// error of each index (nil when it succeeded or was not attempted) and
// whether each was attempted.
func runWaves(w [][][]int, n int, stopOnError bool, step func(i int) error) (errs []error, attempted []bool) {
	errs, attempted = make([]error, n), make([]bool, n)
	var mu sync.Mutex
	failed := false
	runLane := func(lane []int) {
		for _, i := range lane {
			mu.Lock()
			stop := stopOnError && failed
			if !stop {
				attempted[i] = true
			}
			mu.Unlock()
			if stop {
				return
			}
			err := step(i)
			mu.Lock()
			errs[i] = err
			failed = failed || err != nil
			mu.Unlock()
			if err != nil && stopOnError {
				return
			}
		}
	}
	for _, lanes := range w {
		if len(lanes) == 1 {
			runLane(lanes[0])
		} else {
			var wg sync.WaitGroup
			for _, lane := range lanes {
				wg.Go(func() { runLane(lane) })
			}
			wg.Wait()
		}
		if stopOnError && failed {
			break
		}
	}
	return errs, attempted
}
