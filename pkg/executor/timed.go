package executor

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"golang.org/x/sys/unix"

	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/steps"
)

// Timed wraps a plugin exec so that every delegate execution is observed in
// rewire_delegate_duration_seconds by plugin type and CNI command, and in
// the Busy clock of the request it runs for (WithBusy).
func Timed(exec invoke.Exec) invoke.Exec { return timedExec{exec} }

type timedExec struct{ invoke.Exec }

func (t timedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	command := "VERSION"
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			command = v
		}
	}
	busy, _ := ctx.Value(busyKey{}).(*Busy)
	steps.Mark(ctx, "libcni-before-exec")
	busy.begin()
	start := time.Now()
	out, err := t.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
	metrics.DelegateSeconds.Observe(time.Since(start).Seconds(), filepath.Base(pluginPath), command)
	busy.end()
	steps.Mark(ctx, "exec")
	return out, err
}

type busyKey struct{}

// Busy measures the wall time during which at least one delegate of a
// request was executing (concurrent delegates count once): a request's
// duration minus it is rewired's own time. It also reads rewired's process
// CPU clock at the same edges, so that a request served alone can tell its
// own CPU time from its own wall time (which includes waiting for a CPU).
type Busy struct {
	started  time.Time // the request's start: its delegates' place in the queue (Limited)
	startCPU time.Duration
	mu       sync.Mutex
	active   int
	since    time.Time
	sinceCPU time.Duration
	total    time.Duration
	totalCPU time.Duration
}

// WithBusy returns ctx carrying a new Busy clock for the delegates run
// under it, for a request starting now.
func WithBusy(ctx context.Context) (context.Context, *Busy) {
	b := &Busy{started: time.Now(), startCPU: processCPU()}
	return context.WithValue(ctx, busyKey{}, b), b
}

// processCPU is the CPU time all of rewired's threads have used so far.
func processCPU() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

func (b *Busy) begin() {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.active == 0 {
		b.since, b.sinceCPU = time.Now(), processCPU()
	}
	b.active++
	b.mu.Unlock()
}

func (b *Busy) end() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.active--
	if b.active == 0 {
		b.total += time.Since(b.since)
		b.totalCPU += processCPU() - b.sinceCPU
	}
	b.mu.Unlock()
}

// Total returns the time delegates were running so far.
func (b *Busy) Total() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.total
	if b.active > 0 {
		t += time.Since(b.since)
	}
	return t
}

// OwnCPU returns the CPU time rewired's process used since the request
// started, less what it used while the request's delegates were running
// (forking, waiting for and reading them). It is exact for a request served
// alone; concurrent requests, informers and the garbage collector add to it.
func (b *Busy) OwnCPU() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return processCPU() - b.startCPU - b.totalCPU
}
