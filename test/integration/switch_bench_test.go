package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/test/harness"
)

var switchSamples = flag.Int("switch-samples", 20, "switches each way per scenario in BenchmarkSwitch")

// switchFigures collects one direction's measurements.
type switchFigures struct {
	cutOver, daemon, own, plugins, endToEnd []time.Duration
	probes                                  map[string][]harness.ProbeStats // by client
}

// BenchmarkSwitch measures live primary switches A->B and back,
// -switch-samples each way, for each scenario of TestSwitch and each
// address family (IPv4, dual-stack, IPv6), of a multi-homed pod (two
// macvlan secondaries), with a 1 kHz UDP probe and a TCP stream to every
// primary address from a client through the host and from a neighbour on
// A's bridge, and to each secondary from a neighbour on its segment. Per
// switch: probes lost and the longest gap between replies (window:
// annotation PATCH to 30 ms after the pod's eth0 is the new network's), the
// daemon's switch duration (from its Event; also without the time its
// delegate plugins ran, Rewire's own share) and the time from the PATCH to
// the new eth0. The TCP streams must survive. SWITCH_DEBUG=1 prints the
// send times of lost probes and the daemon's switch steps, to place a loss
// in the sequence.
func BenchmarkSwitch(b *testing.B) {
	for _, family := range []string{"4", "dual", "6"} {
		for _, tc := range switchScenarios {
			b.Run("ipv"+family+"/"+tc.name, func(b *testing.B) { benchSwitch(b, family, tc.name, tc.conf) })
		}
	}
}

func benchSwitch(b *testing.B, family, name string, conf func(testing.TB, *env, string) string) {
	e, p, _, clients := switchPod(b, family, conf)
	ctx := context.Background()
	figs := map[string]*switchFigures{"A->B": {probes: map[string][]harness.ProbeStats{}}, "B->A": {probes: map[string][]harness.ProbeStats{}}}
	b.ResetTimer()
	for i := range 2 * *switchSamples {
		dir, target := "A->B", "net-b"
		if i%2 == 1 {
			dir, target = "B->A", ""
		}
		f := figs[dir]
		before := eth0Index(b, p)
		start := time.Now()
		setDefaultNetwork(b, p, target)
		waitNewEth0(b, p, before)
		f.endToEnd = append(f.endToEnd, time.Since(start))
		time.Sleep(30 * time.Millisecond)
		end := time.Now()
		for c, tr := range clients {
			st := tr.probe.Window(start, end)
			f.probes[c] = append(f.probes[c], st)
			if st.Lost() > 0 && os.Getenv("SWITCH_DEBUG") != "" {
				fmt.Printf("%s PATCH %s: %s lost %v\n", dir, start.Format("05.000000"), c, st.LostAt)
			}
		}
		cut, done, plugins := eventDurations(b, waitEvents(b, p, "NetworkSwitched", i+1)[i])
		f.cutOver, f.daemon, f.own = append(f.cutOver, cut), append(f.daemon, done), append(f.own, done-plugins)
		f.plugins = append(f.plugins, plugins)
	}
	b.StopTimer()
	if os.Getenv("SWITCH_DEBUG") != "" {
		for _, l := range strings.Split(e.daemon.Log(), "\n") {
			if strings.Contains(l, "switch step") || strings.Contains(l, "switched") || strings.Contains(l, `"WARN"`) {
				fmt.Println(l[:min(len(l), 260)])
			}
		}
	}
	for _, dir := range []string{"A->B", "B->A"} {
		f := figs[dir]
		fmt.Printf("switch ipv%s %s %s over %d: daemon cut-over median %.1f ms worst %.1f ms, done median %.1f ms worst %.1f ms = its plugins' runs (median %.1f ms, worst %.1f ms) + Rewire's own (median %.1f ms, worst %.1f ms) | PATCH->new eth0 median %.1f ms worst %.1f ms\n",
			family, name, dir, len(f.daemon), ms(median(f.cutOver)), ms(worst(f.cutOver)), ms(median(f.daemon)), ms(worst(f.daemon)),
			ms(median(f.plugins)), ms(worst(f.plugins)), ms(median(f.own)), ms(worst(f.own)),
			ms(median(f.endToEnd)), ms(worst(f.endToEnd)))
		for _, c := range sortedKeys(f.probes) {
			fmt.Printf("    %-32s %s\n", c+":", probeSummary(f.probes[c]))
		}
	}
	for c, tr := range clients {
		if _, n, err := tr.stop(); err != nil {
			b.Errorf("TCP from the client %s did not survive the switches (%d messages echoed): %v", c, n, err)
		}
		tr.client.Close()
	}
	must(b, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

func sortedKeys[V any](m map[string]V) []string {
	out := keys(m)
	sort.Strings(out)
	return out
}

// eth0Index is the ifindex of the pod's eth0 (0 when it has none).
func eth0Index(t testing.TB, p *harness.Pod) int {
	links, err := harness.Links(p.NetNS)
	must(t, err)
	return links["eth0"].Index
}

// waitNewEth0 polls (1 ms) until the pod's eth0 is another interface than
// before and no temporary interface is left.
func waitNewEth0(t testing.TB, p *harness.Pod, before int) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		links, err := harness.Links(p.NetNS)
		must(t, err)
		done := links["eth0"].Index != 0 && links["eth0"].Index != before
		for name := range links {
			done = done && !strings.HasPrefix(name, "rwsw")
		}
		if done {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the switch did not complete")
}

var eventMs = regexp.MustCompile(`traffic moved in ([0-9.]+) ms, done in ([0-9.]+) ms \(plugins ran ([0-9.]+) ms\)$`)

// eventDurations are the cut-over and total durations a NetworkSwitched
// Event reports, and the time its delegates ran.
func eventDurations(t testing.TB, msg string) (cutOver, done, plugins time.Duration) {
	m := eventMs.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("NetworkSwitched event without durations: %q", msg)
	}
	d := func(s string) time.Duration {
		v, _ := strconv.ParseFloat(s, 64)
		return time.Duration(v * float64(time.Millisecond))
	}
	return d(m[1]), d(m[2]), d(m[3])
}

func probeSummary(s []harness.ProbeStats) string {
	lost, worstLost, zero := 0, 0, 0
	gaps := make([]time.Duration, len(s))
	for i, st := range s {
		lost += st.Lost()
		worstLost = max(worstLost, st.Lost())
		if st.Lost() == 0 {
			zero++
		}
		gaps[i] = st.MaxGap
	}
	return fmt.Sprintf("probes lost %d in total, worst %d in one switch, %d/%d switches lossless; longest gap median %.1f ms worst %.1f ms",
		lost, worstLost, zero, len(s), ms(median(gaps)), ms(worst(gaps)))
}

func worst(d []time.Duration) time.Duration {
	var w time.Duration
	for _, v := range d {
		w = max(w, v)
	}
	return w
}
