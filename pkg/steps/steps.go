// Package steps times the steps of one request: code marks the end of each
// step in the request's context and the request's debug log line names
// where its time went. Marks cost one clock read; without a Trace in the
// context they cost nothing.
package steps

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Trace is the list of steps of one request, in the order they ended.
type Trace struct {
	mu    sync.Mutex
	last  time.Time
	names []string
	took  []time.Duration
}

type traceKey struct{}

// With returns ctx carrying a new Trace whose first step starts now.
func With(ctx context.Context) (context.Context, *Trace) {
	t := &Trace{last: time.Now()}
	return context.WithValue(ctx, traceKey{}, t), t
}

// Mark ends the current step of ctx's Trace under name; the next step
// starts now. Concurrent steps (parallel attachments) interleave, so each
// mark then measures the time since any step of the request ended.
func Mark(ctx context.Context, name string) {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	if t == nil {
		return
	}
	now := time.Now()
	t.mu.Lock()
	t.names = append(t.names, name)
	t.took = append(t.took, now.Sub(t.last))
	t.last = now
	t.mu.Unlock()
}

// String lists the steps as "name=1.234ms ...", a name marked more than
// once with its times added up.
func (t *Trace) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	sum := map[string]time.Duration{}
	var order []string
	for i, n := range t.names {
		if _, ok := sum[n]; !ok {
			order = append(order, n)
		}
		sum[n] += t.took[i]
	}
	var b strings.Builder
	for i, n := range order {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%.3fms", n, float64(sum[n].Microseconds())/1000)
	}
	return b.String()
}

// LogValue makes a Trace a lazily formatted log attribute: it is only
// formatted when the log line is written.
func (t *Trace) LogValue() slog.Value { return slog.StringValue(t.String()) }
