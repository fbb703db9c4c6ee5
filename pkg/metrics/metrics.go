// Package metrics holds rewired's Prometheus metrics and writes them in the
// text exposition format. Rewire's own families (rewire_*) are a few dozen
// lines of counters, gauges and histograms with labels; the Go runtime and
// process families (go_*, process_*) come from the Prometheus client
// library's collectors, so they have the names and meaning every dashboard
// and alert written for Go programs expects (a daemon's memory growth, its
// file descriptors, its restarts), and are written into the same exposition.
package metrics

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
)

// Rewire's metrics.
var (
	Requests = NewCounter("rewire_cni_requests_total",
		"CNI requests served, by command and result (ok or error).", "command", "result")
	RequestSeconds = NewHistogram("rewire_cni_request_duration_seconds",
		"Time to serve a CNI request in the daemon, delegates included.", "command")
	RequestOwnSeconds = NewHistogram("rewire_cni_request_own_seconds",
		"Rewire's own time per CNI ADD and DEL: the request's time minus the time its delegates were running (concurrent ones counted once).", "command")
	DelegateSeconds = NewHistogram("rewire_delegate_duration_seconds",
		"Time of one delegate plugin execution, by plugin type and CNI command.", "plugin", "command")
	InFlight = NewGauge("rewire_inflight_operations",
		"Operations running now: CNI commands, hot-plug and switch reconciles.", "operation")
	Reconciles = NewCounter("rewire_reconciles_total",
		"Hot-plug (plug, unplug) and switch operations on running pods, by result.", "operation", "result")
	SwitchSeconds = NewHistogram("rewire_switch_duration_seconds",
		"Duration of completed live primary-network switches (first step to the old primary deleted).")
	SwitchCutOverSeconds = NewHistogram("rewire_switch_cutover_seconds",
		"Time from the first step of a completed live primary-network switch until the pod's traffic runs on the new network.")
	Failures = NewCounter("rewire_failures_total",
		"Failures reported on pods, by Event reason.", "reason")
	DelegatesWaiting = NewGauge("rewire_delegates_waiting",
		"Delegate executions waiting for a slot (config maxConcurrentDelegates).")
	StoreRecords    = NewGauge("rewire_store_records", "Sandbox records in the attachment store.")
	SelfGCSandboxes = NewCounter("rewire_self_gc_sandboxes_total",
		"Sandboxes the container runtime no longer has, found by self-GC, by result: released (every attachment released), "+
			"failed (retried at the next pass), dry_run (would be released: gcDryRun; each sandbox once).", "result")
	SelfGCRuns = NewCounter("rewire_self_gc_runs_total",
		"Self-GC passes, by result: ok, or error (the runtime could not be asked or its answer was not trusted; nothing released).", "result")
	MigrationPods = NewGaugeFunc("rewire_migration_pods",
		"This node's pods in each NetworkMigration as last reported in its status, by state "+
			"(total, switched, failed, skipped, remaining, switching; switching is part of remaining).",
		"migration", "state")
)

// All lists Rewire's own metrics in the order they are written.
var All = []Writer{Requests, RequestSeconds, RequestOwnSeconds, DelegateSeconds, InFlight, Reconciles, SwitchSeconds, SwitchCutOverSeconds, Failures, DelegatesWaiting, StoreRecords, SelfGCSandboxes, SelfGCRuns, MigrationPods}

// Writer is a metric family that writes itself in the text format.
type Writer interface {
	Write(w io.Writer)
	// Name is the family's name, Type its type (counter, gauge, histogram).
	Name() string
	Type() string
}

// goRuntime gathers the client library's Go runtime and process collectors.
var goRuntime = newRuntime()

func newRuntime() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Write writes every metric of All, then the go_* and process_* families.
// A runtime family that cannot be read (such as process_* where /proc is
// missing) is left out and reported in the error; the rest is written.
func Write(w io.Writer) error {
	for _, m := range All {
		m.Write(w)
	}
	fams, gatherErr := goRuntime.Gather()
	var errs []error
	if gatherErr != nil {
		errs = append(errs, fmt.Errorf("gathering runtime metrics: %w", gatherErr))
	}
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(w, f); err != nil {
			return errors.Join(append(errs, fmt.Errorf("writing %s: %w", f.GetName(), err))...)
		}
	}
	return errors.Join(errs...)
}

// Names returns the name of every series rewired exports, as a query names
// it: each family's name, and for a histogram its _bucket, _sum and _count
// series (for a summary _sum and _count), the runtime families included.
func Names() ([]string, error) {
	var names []string
	for _, m := range All {
		names = append(names, seriesNames(m.Name(), m.Type())...)
	}
	fams, err := goRuntime.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering runtime metrics: %w", err)
	}
	for _, f := range fams {
		names = append(names, seriesNames(f.GetName(), strings.ToLower(f.GetType().String()))...)
	}
	sort.Strings(names)
	return names, nil
}

// seriesNames are the series names a family of the type (text format's
// name: counter, gauge, histogram, summary, untyped) has.
func seriesNames(name, kind string) []string {
	switch kind {
	case "histogram":
		return []string{name + "_bucket", name + "_sum", name + "_count"}
	case "summary":
		return []string{name, name + "_sum", name + "_count"}
	}
	return []string{name}
}

// family is what every metric shares: name, help, label names, and the
// series by their joined label values.
type family struct {
	name, help, kind string
	labels           []string
	mu               sync.Mutex
	series           map[string][]string // key -> label values
}

func newFamily(name, help, kind string, labels []string) family {
	return family{name: name, help: help, kind: kind, labels: labels, series: map[string][]string{}}
}

// key registers the label values of a series; the caller holds mu.
func (f *family) key(values []string) string {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("metric %s: %d label values for %d labels", f.name, len(values), len(f.labels)))
	}
	k := strings.Join(values, "\xff")
	if _, ok := f.series[k]; !ok {
		f.series[k] = append([]string(nil), values...)
	}
	return k
}

// Name implements Writer.
func (f *family) Name() string { return f.name }

// Type implements Writer.
func (f *family) Type() string { return f.kind }

func (f *family) header(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.kind)
}

// keys returns the series keys in a stable order.
func (f *family) keys() []string {
	keys := make([]string, 0, len(f.series))
	for k := range f.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// labelEscaper escapes a label value as the text exposition format wants:
// backslash, double quote and line feed, nothing else (strconv.Quote's
// \u and \x escapes are not part of the format).
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(v string) string { return labelEscaper.Replace(v) }

// labelString renders {a="x",b="y"} with extra pairs appended.
func (f *family) labelString(values []string, extra ...string) string {
	var parts []string
	for i, l := range f.labels {
		parts = append(parts, l+`="`+escapeLabel(values[i])+`"`)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		parts = append(parts, extra[i]+`="`+escapeLabel(extra[i+1])+`"`)
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// Counter only goes up.
type Counter struct {
	family
	values map[string]float64
}

// NewCounter makes a counter with the given label names.
func NewCounter(name, help string, labels ...string) *Counter {
	return &Counter{family: newFamily(name, help, "counter", labels), values: map[string]float64{}}
}

// Inc adds one to the series of the label values.
func (c *Counter) Inc(values ...string) {
	c.mu.Lock()
	c.values[c.key(values)]++
	c.mu.Unlock()
}

// Value returns a series' value (tests).
func (c *Counter) Value(values ...string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.values[strings.Join(values, "\xff")]
}

// Write implements Writer.
func (c *Counter) Write(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.header(w)
	for _, k := range c.keys() {
		fmt.Fprintf(w, "%s%s %s\n", c.name, c.labelString(c.series[k]), num(c.values[k]))
	}
}

// Gauge goes up and down.
type Gauge struct{ Counter }

// NewGauge makes a gauge with the given label names.
func NewGauge(name, help string, labels ...string) *Gauge {
	g := &Gauge{Counter{family: newFamily(name, help, "gauge", labels), values: map[string]float64{}}}
	return g
}

// Add adds delta (negative to lower it).
func (g *Gauge) Add(delta float64, values ...string) {
	g.mu.Lock()
	g.values[g.key(values)] += delta
	g.mu.Unlock()
}

// Set sets the series' value.
func (g *Gauge) Set(v float64, values ...string) {
	g.mu.Lock()
	g.values[g.key(values)] = v
	g.mu.Unlock()
}

// GaugeFunc is a gauge whose series are read from a function at each
// scrape, for values held elsewhere (an informer's cache): the series of
// something gone disappear with it.
type GaugeFunc struct {
	family
	fn func(set func(v float64, values ...string))
}

// NewGaugeFunc makes a gauge read by a function (none yet: no series).
func NewGaugeFunc(name, help string, labels ...string) *GaugeFunc {
	return &GaugeFunc{family: newFamily(name, help, "gauge", labels)}
}

// SetFunc sets the function read at each scrape; it calls set once per
// series (a series set twice keeps the last value). nil: no series.
func (g *GaugeFunc) SetFunc(fn func(set func(v float64, values ...string))) {
	g.mu.Lock()
	g.fn = fn
	g.mu.Unlock()
}

// Write implements Writer.
func (g *GaugeFunc) Write(w io.Writer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.series = map[string][]string{}
	values := map[string]float64{}
	if g.fn != nil {
		g.fn(func(v float64, labelValues ...string) { values[g.key(labelValues)] = v })
	}
	g.header(w)
	for _, k := range g.keys() {
		fmt.Fprintf(w, "%s%s %s\n", g.name, g.labelString(g.series[k]), num(values[k]))
	}
}

// Buckets are the histograms' upper bounds in seconds: 1 ms to 60 s.
var Buckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Histogram counts observations in Buckets.
type Histogram struct {
	family
	counts map[string][]uint64 // per bucket, plus +Inf last
	sums   map[string]float64
}

// NewHistogram makes a histogram with the given label names.
func NewHistogram(name, help string, labels ...string) *Histogram {
	return &Histogram{family: newFamily(name, help, "histogram", labels), counts: map[string][]uint64{}, sums: map[string]float64{}}
}

// Observe records one value (seconds).
func (h *Histogram) Observe(v float64, values ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.key(values)
	if h.counts[k] == nil {
		h.counts[k] = make([]uint64, len(Buckets)+1)
	}
	i := sort.SearchFloat64s(Buckets, v) // first bound >= v
	h.counts[k][i]++
	h.sums[k] += v
}

// Count returns the number of observations of a series (tests).
func (h *Histogram) Count(values ...string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n uint64
	for _, c := range h.counts[strings.Join(values, "\xff")] {
		n += c
	}
	return n
}

// Write implements Writer.
func (h *Histogram) Write(w io.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.header(w)
	for _, k := range h.keys() {
		values := h.series[k]
		var cum uint64
		for i, c := range h.counts[k] {
			cum += c
			le := "+Inf"
			if i < len(Buckets) {
				le = num(Buckets[i])
			}
			fmt.Fprintf(w, "%s_bucket%s %d\n", h.name, h.labelString(values, "le", le), cum)
		}
		fmt.Fprintf(w, "%s_sum%s %s\n%s_count%s %d\n", h.name, h.labelString(values), num(h.sums[k]), h.name, h.labelString(values), cum)
	}
}

func num(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
