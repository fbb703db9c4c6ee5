package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboardFile is the Grafana dashboard shipped for rewired's metrics.
const dashboardFile = "../../deploy/grafana/rewire-dashboard.json"

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Title      string
	UID        string
	Panels     []panel
	Templating struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
		}
	}
}

type panel struct {
	ID         int
	Type       string
	Title      string
	Datasource *struct{ UID string }
	Targets    []struct{ Expr string }
	Panels     []panel // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// Every query of the dashboard (panels and template variables) names only
// series rewired exports (Names: the registry of Rewire's families and the
// runtime collectors), every panel has a query on the dashboard's data
// source variable, and the dashboard shows what an operator asks about.
func TestDashboardQueriesNameExportedMetrics(t *testing.T) {
	d := readDashboard(t)
	exported, err := Names()
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	check := func(where, expr string) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: query %q names no metric", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !slices.Contains(exported, n) {
				t.Errorf("%s: query names %s, which rewired does not export:\n%s", where, n, expr)
			}
		}
	}
	ids := map[int]bool{}
	for _, p := range allPanels(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`).FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(SERIES, LABEL)", v.Name, q.Query)
			continue
		}
		check("variable "+v.Name, m[1])
	}
	for _, want := range []string{
		"rewire_cni_request_duration_seconds_bucket", // CNI latency per verb
		"rewire_delegate_duration_seconds_bucket",    // delegate latency per plugin
		"rewire_switch_duration_seconds_bucket",      // switch durations
		"rewire_migration_pods",                      // migration progress
		"rewire_failures_total",                      // failures by reason
		"process_resident_memory_bytes", "go_goroutines",
	} {
		if !used[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
}

// metricNames is the lexer the dashboard test uses: the metric names of a
// PromQL expression, skipping label matchers, ranges, strings, numbers and
// durations, Grafana's $variables, function names and keywords with their
// label lists (by, without, on, ignoring, group_left, group_right).
func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`rate(a_total{job=~"$job", x="by (y)"}[$__rate_interval])`, []string{"a_total"}},
		{`histogram_quantile(0.99, sum by (command, le) (rate(h_bucket{i=~"$i"}[5m])))`, []string{"h_bucket"}},
		{`sum without (instance) (a) / on (job) group_left (node) b offset 1h`, []string{"a", "b"}},
		{`sum(changes(p_start{x="1"}[$__range])) > bool 0 and c unless d or e`, []string{"p_start", "c", "d", "e"}},
		{`sum(x) by (le) * 1e3 + 0x1f - 2.5 + ns:rule:rate5m`, []string{"x", "ns:rule:rate5m"}},
		{`max_over_time(a[1h:5m]) @ end()`, []string{"a"}},
		{`count by (reason) ({__name__="n", r='q'})`, nil},
	} {
		t.Run(c.expr, func(t *testing.T) {
			if got := metricNames(c.expr); !slices.Equal(got, c.want) {
				t.Fatalf("metricNames = %q, want %q", got, c.want)
			}
		})
	}
}

// promqlKeywords are identifiers that are not metric names where they
// stand alone: operators, modifiers, and the aggregations (followed by a
// by or without clause, not by their parenthesis).
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "start": true, "end": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// labelListKeywords take a parenthesised list of label names.
var labelListKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

func metricNames(expr string) []string {
	var names []string
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	// skipTo returns the index after the bracket closing the one at i,
	// skipping quoted strings.
	skipTo := func(i int, open, close byte) int {
		depth := 0
		for ; i < len(expr); i++ {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				i = skipString(expr, i) - 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i)
		case c == '{':
			i = skipTo(i, '{', '}')
		case c == '[':
			i = skipTo(i, '[', ']')
		case c == '$': // Grafana variable: $name or ${name}
			i++
			if i < len(expr) && expr[i] == '{' {
				i = skipTo(i, '{', '}')
			}
			for i < len(expr) && isPart(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			switch {
			case labelListKeywords[strings.ToLower(word)] && k < len(expr) && expr[k] == '(':
				j = skipTo(k, '(', ')')
			case k < len(expr) && expr[k] == '(': // a function or aggregation
			case promqlKeywords[strings.ToLower(word)]:
			default:
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	return names
}

// skipString returns the index after the quoted string starting at i.
func skipString(s string, i int) int {
	q := s[i]
	for i++; i < len(s); i++ {
		if s[i] == '\\' && q != '`' {
			i++
			continue
		}
		if s[i] == q {
			return i + 1
		}
	}
	return i
}
