package metrics

import (
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
