package metrics

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestExposition(t *testing.T) {
	c := NewCounter("t_requests_total", "Requests.", "command", "result")
	c.Inc("ADD", "ok")
	c.Inc("ADD", "ok")
	c.Inc("DEL", "7")
	g := NewGauge("t_records", "Records.")
	g.Set(3)
	g.Add(-1)
	h := NewHistogram("t_seconds", "Durations.", "plugin")
	h.Observe(0.003, "bridge")
	h.Observe(0.2, "bridge")
	h.Observe(100, "bridge")

	var b strings.Builder
	for _, m := range []Writer{c, g, h} {
		m.Write(&b)
	}
	for _, want := range []string{
		"# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\n",
		`t_requests_total{command="ADD",result="ok"} 2` + "\n",
		`t_requests_total{command="DEL",result="7"} 1` + "\n",
		"# TYPE t_records gauge\nt_records 2\n",
		`t_seconds_bucket{plugin="bridge",le="0.001"} 0` + "\n",
		`t_seconds_bucket{plugin="bridge",le="0.005"} 1` + "\n",
		`t_seconds_bucket{plugin="bridge",le="0.25"} 2` + "\n",
		`t_seconds_bucket{plugin="bridge",le="60"} 2` + "\n",
		`t_seconds_bucket{plugin="bridge",le="+Inf"} 3` + "\n",
		`t_seconds_sum{plugin="bridge"} 100.203` + "\n",
		`t_seconds_count{plugin="bridge"} 3` + "\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("exposition lacks %q:\n%s", want, b.String())
		}
	}
	if c.Value("ADD", "ok") != 2 || h.Count("bridge") != 3 {
		t.Fatalf("Value %v Count %v", c.Value("ADD", "ok"), h.Count("bridge"))
	}
}

func TestWrongLabelCountPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a missing label value")
		}
	}()
	NewCounter("t_x", "x", "a").Inc()
}

// The exposition is valid for a real parser (Prometheus' own), also with
// label values that need escaping (plugin names and failure reasons come
// from configs and errors), and reads back the values written.
func TestExpositionParses(t *testing.T) {
	c := NewCounter("t_failures_total", "Failures.", "reason")
	odd := "quote \" backslash \\ newline \n tab \t unicode é \x01"
	c.Inc(odd)
	h := NewHistogram("t_delegate_seconds", "Durations.", "plugin")
	h.Observe(0.01, `we"ird\`)
	var b strings.Builder
	for _, m := range []Writer{c, h} {
		m.Write(&b)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, b.String())
	}
	got := fams["t_failures_total"].GetMetric()[0].GetLabel()[0].GetValue()
	if got != odd {
		t.Fatalf("label value read back as %q, want %q", got, odd)
	}
	if n := fams["t_delegate_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n != 1 {
		t.Fatalf("histogram count %d", n)
	}
}

// GaugeFunc's series are what its function reports at each scrape: a
// series no longer reported is gone.
func TestGaugeFunc(t *testing.T) {
	g := NewGaugeFunc("t_pods", "Pods.", "migration", "state")
	var b strings.Builder
	g.Write(&b)
	if b.String() != "# HELP t_pods Pods.\n# TYPE t_pods gauge\n" {
		t.Fatalf("without a function: %q", b.String())
	}
	reported := map[string]float64{"a": 3, "b": 1}
	g.SetFunc(func(set func(float64, ...string)) {
		for m, v := range reported {
			set(v, m, "switched")
		}
	})
	b.Reset()
	g.Write(&b)
	for _, want := range []string{`t_pods{migration="a",state="switched"} 3`, `t_pods{migration="b",state="switched"} 1`} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
	delete(reported, "a")
	b.Reset()
	g.Write(&b)
	if strings.Contains(b.String(), `migration="a"`) || !strings.Contains(b.String(), `migration="b"`) {
		t.Errorf("after a is gone:\n%s", b.String())
	}
}

// The whole exposition rewired serves — Rewire's families with series in
// each, then the Go runtime and process families — parses with
// Prometheus' own parser (which refuses a family written twice), and has
// the runtime families users' dashboards and alerts expect.
func TestWriteParses(t *testing.T) {
	Requests.Inc("ADD", "ok")
	RequestSeconds.Observe(0.02, "ADD")
	DelegateSeconds.Observe(0.01, "bridge", "ADD")
	InFlight.Add(0, "ADD")
	Reconciles.Inc("switch", "ok")
	SwitchSeconds.Observe(1.5)
	Failures.Inc("NetworkAddFailed")
	StoreRecords.Set(2)
	MigrationPods.SetFunc(func(set func(float64, ...string)) { set(4, "to-ptp", "switched") })
	defer MigrationPods.SetFunc(nil)

	var b strings.Builder
	if err := Write(&b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, b.String())
	}
	for _, m := range All {
		if !strings.Contains(b.String(), "# TYPE "+m.Name()+" "+m.Type()+"\n") {
			t.Errorf("exposition lacks family %s (%s)", m.Name(), m.Type())
		}
		// The parser leaves out families without series.
		if f := fams[m.Name()]; f != nil && !strings.EqualFold(f.GetType().String(), m.Type()) {
			t.Errorf("family %s (%s) read back as %v", m.Name(), m.Type(), f.GetType())
		}
	}
	for _, name := range []string{"rewire_cni_requests_total", "rewire_delegate_duration_seconds", "rewire_switch_duration_seconds", "rewire_failures_total"} {
		if len(fams[name].GetMetric()) != 1 {
			t.Errorf("%s read back as %v", name, fams[name])
		}
	}
	for _, name := range []string{
		"go_goroutines", "go_threads", "go_info", "go_gc_duration_seconds", "go_memstats_alloc_bytes", "go_memstats_heap_inuse_bytes",
		"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
		"process_open_fds", "process_max_fds", "process_start_time_seconds",
	} {
		if fams[name] == nil {
			t.Errorf("exposition lacks %s", name)
		}
	}
	if rss := fams["process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue(); rss <= 0 {
		t.Errorf("process_resident_memory_bytes %v", rss)
	}
	if v := fams["rewire_migration_pods"].GetMetric()[0].GetGauge().GetValue(); v != 4 {
		t.Errorf("rewire_migration_pods %v, want 4", v)
	}
}

// Names has every series name a query can use: histograms' _bucket, _sum
// and _count, the summary of GC pauses, plain families by their name.
func TestNames(t *testing.T) {
	names, err := Names()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"rewire_cni_requests_total", "rewire_cni_request_duration_seconds_bucket", "rewire_cni_request_duration_seconds_count",
		"rewire_switch_duration_seconds_sum", "rewire_migration_pods", "rewire_store_records",
		"go_goroutines", "go_gc_duration_seconds", "go_gc_duration_seconds_count", "process_resident_memory_bytes",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("Names lacks %s", want)
		}
	}
	for _, notWant := range []string{"rewire_cni_request_duration_seconds", "rewire_store_records_total"} {
		if slices.Contains(names, notWant) {
			t.Errorf("Names has %s", notWant)
		}
	}
}
