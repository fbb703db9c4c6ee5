package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/test/harness"
)

var switchSamples = flag.Int("switch-samples", 20, "switches each way per scenario in BenchmarkSwitch")

// switchFigures collects one direction's measurements.
type switchFigures struct {
	daemon, endToEnd []time.Duration
	far, near        []harness.ProbeStats
}

// BenchmarkSwitch measures live primary switches A->B and back,
// -switch-samples each way, for each scenario of TestSwitch, with a 1 kHz
// UDP probe and a TCP stream from a client through the host (far) and from a
// neighbour on A's bridge (near). Per switch: probes lost and the longest
// gap between replies (window: annotation PATCH to 30 ms after the pod's
// eth0 is the new network's), the daemon's switch duration (from its Event)
// and the time from the PATCH to the new eth0. The TCP streams must survive.
// SWITCH_DEBUG=1 prints the send times of lost probes and the daemon's
// switch steps, to place a loss in the sequence.
func BenchmarkSwitch(b *testing.B) {
	for _, tc := range switchScenarios {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b, envOpts{})
			p := e.newPod("default", "sw-bench-"+tc.name, nil)
			ctx := context.Background()
			r, err := e.rt.Add(ctx, p)
			must(b, err)
			ip := primaryIP(b, r)
			e.createNAD("default", "net-b", tc.conf(b, e, fmt.Sprintf("b-%d", e.n)), nil)
			startEcho(b, p)
			far, near := startTraffic(b, farClient(b, e), ip), startTraffic(b, nearClient(b, e), ip)
			figs := map[string]*switchFigures{"A->B": {}, "B->A": {}}
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
				f.far = append(f.far, far.probe.Window(start, end))
				if st := f.far[len(f.far)-1]; st.Lost() > 0 && os.Getenv("SWITCH_DEBUG") != "" {
					fmt.Printf("%s PATCH %s lost %v\n", dir, start.Format("05.000000"), st.LostAt)
				}
				f.near = append(f.near, near.probe.Window(start, end))
				f.daemon = append(f.daemon, eventDuration(b, waitEvents(b, p, "NetworkSwitched", i+1)[i]))
			}
			b.StopTimer()
			if os.Getenv("SWITCH_DEBUG") != "" {
				for _, l := range strings.Split(e.daemon.Log(), "\n") {
					if strings.Contains(l, "switch step") || strings.Contains(l, "switched") {
						fmt.Println(l[:min(len(l), 140)])
					}
				}
			}
			for _, dir := range []string{"A->B", "B->A"} {
				f := figs[dir]
				fmt.Printf("switch %s %s over %d: daemon median %.1f ms worst %.1f ms | PATCH->new eth0 median %.1f ms worst %.1f ms\n",
					tc.name, dir, len(f.daemon), ms(median(f.daemon)), ms(worst(f.daemon)), ms(median(f.endToEnd)), ms(worst(f.endToEnd)))
				fmt.Printf("    through the host: %s\n    on A's bridge:    %s\n", probeSummary(f.far), probeSummary(f.near))
			}
			for name, tr := range map[string]*traffic{"through the host": far, "on A's bridge": near} {
				if _, n, err := tr.stop(); err != nil {
					b.Errorf("TCP from the client %s did not survive the switches (%d messages echoed): %v", name, n, err)
				}
			}
			must(b, e.rt.Del(ctx, p))
			e.assertNoLeaks()
		})
	}
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

var eventMs = regexp.MustCompile(` in ([0-9.]+) ms$`)

func eventDuration(t testing.TB, msg string) time.Duration {
	m := eventMs.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("NetworkSwitched event without a duration: %q", msg)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return time.Duration(v * float64(time.Millisecond))
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
