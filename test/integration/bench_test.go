package integration

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/rewire-cni/rewire/pkg/daemon"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

var samples = flag.Int("samples", 40, "ADDs measured per configuration in BenchmarkAddOverhead")

// BenchmarkAddOverhead measures the time of a pod ADD through Rewire (plugin
// binary -> daemon -> delegates) against calling the same delegates directly
// through libcni, with 0, 1 and 3 secondary networks, interleaving the two so
// that both see the same machine load. It prints medians, p90s, the
// per-ADD API requests of the daemon and its RSS.
func BenchmarkAddOverhead(b *testing.B) {
	for _, n := range []int{0, 1, 3} {
		b.Run(fmt.Sprintf("secondaries=%d", n), func(b *testing.B) {
			benchAdd(b, n)
		})
	}
}

var daemonProfile = flag.String("daemon-cpuprofile", "", "rewired's CPU profile: of BenchmarkAddOverhead's ADDs and DELs to PREFIX-<secondaries>.pprof, of BenchmarkMigration's passes to PREFIX-migration.pprof")

// ownTimes is rewired's own time (request time minus delegate time) of
// every ADD and DEL of a benchmark's pods, its own CPU time, and its steps,
// from its debug log.
type ownTimes struct {
	total map[string][]time.Duration            // by command
	cpu   map[string][]time.Duration            // by command
	steps map[string]map[string][]time.Duration // by command, then step
	order map[string][]string                   // step names by command, as first seen
}

func daemonOwnTimes(b *testing.B, log string, pods []*harness.Pod) ownTimes {
	ids := map[string]bool{}
	for _, p := range pods {
		ids[p.ContainerID] = true
	}
	out := ownTimes{total: map[string][]time.Duration{}, cpu: map[string][]time.Duration{}, steps: map[string]map[string][]time.Duration{}, order: map[string][]string{}}
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"CNI request done"`) {
			continue
		}
		var l struct {
			Command, ContainerID, Steps string
			OwnMs, OwnCPUMs             float64
		}
		if json.Unmarshal([]byte(line), &l) != nil || !ids[l.ContainerID] {
			continue
		}
		out.total[l.Command] = append(out.total[l.Command], msDuration(l.OwnMs))
		out.cpu[l.Command] = append(out.cpu[l.Command], msDuration(l.OwnCPUMs))
		out.addSteps(l.Command, l.Steps)
	}
	if len(out.total["ADD"]) != len(pods) || len(out.total["DEL"]) != len(pods) {
		b.Fatalf("daemon log: %d ADD and %d DEL own times for %d pods", len(out.total["ADD"]), len(out.total["DEL"]), len(pods))
	}
	return out
}

// addSteps adds one request's "name=1.234ms ..." steps.
func (o ownTimes) addSteps(command, steps string) {
	if o.steps[command] == nil {
		o.steps[command] = map[string][]time.Duration{}
	}
	for _, f := range strings.Fields(steps) {
		name, v, _ := strings.Cut(f, "=")
		var took float64
		if _, err := fmt.Sscanf(v, "%fms", &took); err != nil {
			continue
		}
		if _, ok := o.steps[command][name]; !ok {
			o.order[command] = append(o.order[command], name)
		}
		o.steps[command][name] = append(o.steps[command][name], msDuration(took))
	}
}

// summary lists each step's median, in the order the steps ran ("exec" is
// the delegates' own time, the rest is rewired's).
func (o ownTimes) summary(command string) string {
	var parts []string
	for _, name := range o.order[command] {
		parts = append(parts, fmt.Sprintf("%s %.2f", name, ms(median(o.steps[command][name]))))
	}
	return strings.Join(parts, ", ")
}

func msDuration(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

var benchConfig = flag.String("bench-config", "", "extra daemon config YAML for BenchmarkAddOverhead")

func benchAdd(b *testing.B, secondaries int) {
	if *daemonProfile != "" {
		b.Setenv(daemon.ProfileEnv, "1") // rewired inherits the environment
	}
	e := newEnv(b, envOpts{extraConfig: strings.ReplaceAll(*benchConfig, `\n`, "\n")})
	var names []string
	for i := range secondaries {
		name := fmt.Sprintf("bench-mv%d", i)
		e.createNAD("default", name, e.macvlanRange(name, fmt.Sprintf("172.%d.%d", 20+i, e.n), 10, 250), nil)
		names = append(names, name)
	}
	ann := map[string]string{}
	if secondaries > 0 {
		ann[selection.NetworksAnnotation] = strings.Join(names, ",")
	}
	direct := e.directDelegates(b, names)
	var pods []*harness.Pod
	for i := range *samples {
		pods = append(pods, e.newPod("default", fmt.Sprintf("bench-%d-%d", secondaries, i), ann))
	}
	for _, p := range pods { // each ADD finds its pod in the daemon's cache
		e.waitView(b, p, "the pod", func(daemon.PodView) bool { return true })
	}
	before, err := e.daemon.Counters()
	must(b, err)

	ctx := context.Background()
	var directNS []ns.NetNS
	for range pods {
		directNS = append(directNS, scratchNS(b))
	}
	// Nothing is torn down inside the measured loop (a netns teardown
	// keeps the kernel busy for milliseconds afterwards), and the order of
	// the two paths alternates so neither always runs first.
	var viaRewire, viaDirect, spawn []time.Duration
	if *daemonProfile != "" {
		_, err := e.daemon.Post("/debug/cpuprofile/start")
		must(b, err)
	}
	b.ResetTimer()
	for i, p := range pods {
		runRewire := func() {
			start := time.Now()
			_, err := e.rt.Add(ctx, p)
			viaRewire = append(viaRewire, time.Since(start))
			must(b, err)
		}
		runDirect := func() {
			start := time.Now()
			direct.add(ctx, b, i, directNS[i].Path())
			viaDirect = append(viaDirect, time.Since(start))
		}
		interleaved(i, runRewire, runDirect)
		// The part of the overhead a daemon-based meta plugin cannot avoid:
		// the runtime executing one more plugin binary and its round trip
		// to rewired (a CHECK of an unknown container, answered at once).
		start := time.Now()
		if err := e.rt.Check(ctx, &harness.Pod{Namespace: "default", Name: "none", ContainerID: "roundtrip", NetNS: directNS[i]}); err == nil {
			b.Fatal("CHECK of an unknown container succeeded")
		}
		spawn = append(spawn, time.Since(start))
	}
	b.StopTimer()
	e.waitReported(b, pods)
	after, err := e.daemon.Counters()
	must(b, err)
	// DEL, interleaved the same way.
	var delRewire, delDirect []time.Duration
	for i, p := range pods {
		runRewire := func() {
			start := time.Now()
			must(b, e.rt.Del(ctx, p))
			delRewire = append(delRewire, time.Since(start))
		}
		runDirect := func() {
			start := time.Now()
			direct.del(ctx, b, i, directNS[i].Path())
			delDirect = append(delDirect, time.Since(start))
		}
		interleaved(i, runRewire, runDirect)
	}
	if *daemonProfile != "" {
		prof, err := e.daemon.Post("/debug/cpuprofile/stop")
		must(b, err)
		must(b, os.WriteFile(fmt.Sprintf("%s-%d.pprof", *daemonProfile, secondaries), prof, 0o644))
	}
	own := daemonOwnTimes(b, e.daemon.Log(), pods)
	dm, rm := median(viaDirect), median(viaRewire)
	perAdd := func(k string) float64 { return float64(after[k]-before[k]) / float64(len(pods)) }
	fmt.Printf("ADD secondaries=%d samples=%d: direct median %.2f ms p90 %.2f ms | rewire median %.2f ms p90 %.2f ms | overhead median %.2f ms (of which the plugin's exec and round trip %.2f ms) | API per ADD: %.2f writes, %.2f reads | daemon RSS %d MiB\n",
		secondaries, len(pods), ms(dm), ms(p90(viaDirect)), ms(rm), ms(p90(viaRewire)), ms(rm-dm), ms(median(spawn)),
		perAdd("writes"), perAdd("reads"), e.daemon.RSS()>>20)
	fmt.Printf("DEL secondaries=%d samples=%d: direct median %.2f ms p90 %.2f ms | rewire median %.2f ms p90 %.2f ms | overhead median %.2f ms\n",
		secondaries, len(pods), ms(median(delDirect)), ms(p90(delDirect)), ms(median(delRewire)), ms(p90(delRewire)), ms(median(delRewire)-median(delDirect)))
	fmt.Printf("daemon own time secondaries=%d (request time minus delegate time, rewired's log): ADD median %.2f ms p90 %.2f ms | DEL median %.2f ms p90 %.2f ms\n",
		secondaries, ms(median(own.total["ADD"])), ms(p90(own.total["ADD"])), ms(median(own.total["DEL"])), ms(p90(own.total["DEL"])))
	fmt.Printf("daemon own CPU secondaries=%d (rewired's process CPU clock over the request, less while delegates ran): ADD median %.2f ms p90 %.2f ms | DEL median %.2f ms p90 %.2f ms\n",
		secondaries, ms(median(own.cpu["ADD"])), ms(p90(own.cpu["ADD"])), ms(median(own.cpu["DEL"])), ms(p90(own.cpu["DEL"])))
	for _, c := range []string{"ADD", "DEL"} {
		fmt.Printf("daemon steps %s secondaries=%d (median ms, per request, in order): %s\n", c, secondaries, own.summary(c))
	}
	b.ReportMetric(ms(rm-dm), "overhead-ms")
	b.ReportMetric(ms(median(own.total["ADD"])), "own-add-ms")
	b.ReportMetric(ms(median(own.total["DEL"])), "own-del-ms")
	b.ReportMetric(ms(median(own.cpu["ADD"])), "own-cpu-add-ms")
	b.ReportMetric(ms(median(own.cpu["DEL"])), "own-cpu-del-ms")
	b.ReportMetric(perAdd("writes"), "api-writes/add")
	b.ReportMetric(perAdd("reads"), "api-reads/add")
}

// directCaller runs the cluster network and the NADs' configs straight
// through libcni, as a runtime without Rewire would.
type directCaller struct {
	cni   *libcni.CNIConfig
	lists []*libcni.NetworkConfigList
}

func (e *env) directDelegates(b *testing.B, nads []string) *directCaller {
	cluster, err := libcni.ConfListFromBytes([]byte(e.clusterConf([2]int{})))
	must(b, err)
	d := &directCaller{cni: libcni.NewCNIConfigWithCacheDir([]string{tools}, filepath.Join(e.dir, "direct-cache"), harness.PluginExec()),
		lists: []*libcni.NetworkConfigList{cluster}}
	for i := range nads {
		conf, err := libcni.ConfFromBytes([]byte(e.macvlanRange(nads[i], fmt.Sprintf("172.%d.%d", 20+i, e.n), 10, 250)))
		must(b, err)
		l, err := libcni.ConfListFromConf(conf)
		must(b, err)
		d.lists = append(d.lists, l)
	}
	return d
}

func (d *directCaller) rt(sandbox, i int, netns string) *libcni.RuntimeConf {
	ifName := "eth0"
	if i > 0 {
		ifName = fmt.Sprintf("net%d", i)
	}
	return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("direct%d", sandbox), NetNS: netns, IfName: ifName}
}

func (d *directCaller) add(ctx context.Context, b *testing.B, sandbox int, netns string) {
	for i, l := range d.lists {
		_, err := d.cni.AddNetworkList(ctx, l, d.rt(sandbox, i, netns))
		must(b, err)
	}
}

func (d *directCaller) del(ctx context.Context, b *testing.B, sandbox int, netns string) {
	for i := len(d.lists) - 1; i >= 0; i-- {
		must(b, d.cni.DelNetworkList(ctx, d.lists[i], d.rt(sandbox, i, netns)))
	}
}

// waitReported waits until the API writes of every pod's ADD are done: its
// network-status, and its AddedInterface Event unless the bench config
// turns them off.
func (e *env) waitReported(b *testing.B, pods []*harness.Pod) {
	events := !strings.Contains(*benchConfig, "addedInterfaceEvents: false")
	for _, p := range pods {
		networkStatus(b, p)
		if events {
			waitEvents(b, p, kube.ReasonAddedInterface, 1)
		}
	}
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }
func p90(d []time.Duration) time.Duration    { return quantile(d, 0.9) }

func quantile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

var concurrent = flag.Int("concurrent", 100, "pods ADDed at once in BenchmarkConcurrentAdds")

// BenchmarkConcurrentAdds starts the ADDs of many pods (cluster network + one
// macvlan) at once through Rewire, then the same delegates directly, and
// prints failures, wall times, their ratio and the daemon's RSS idle and at
// its peak.
func BenchmarkConcurrentAdds(b *testing.B) {
	e := newEnv(b, envOpts{})
	e.createNAD("default", "conc-mv", e.macvlanRange("conc-mv", fmt.Sprintf("172.30.%d", e.n), 2, 254), nil)
	direct := e.directDelegates(b, nil)
	mv, err := libcni.ConfFromBytes([]byte(e.macvlanRange("conc-mv", fmt.Sprintf("172.30.%d", e.n), 2, 254)))
	must(b, err)
	mvList, err := libcni.ConfListFromConf(mv)
	must(b, err)
	direct.lists = append(direct.lists, mvList)

	n := *concurrent
	pods := make([]*harness.Pod, n)
	directNS := make([]ns.NetNS, n)
	for i := range n {
		pods[i] = e.newPod("default", fmt.Sprintf("conc-%d", i), map[string]string{selection.NetworksAnnotation: "conc-mv"})
		directNS[i] = scratchNS(b)
	}
	time.Sleep(time.Second)
	idle := e.daemon.RSS()
	ctx := context.Background()
	parallel := func(f func(i int) error) (time.Duration, int) {
		var failed atomic.Int32
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				if err := f(i); err != nil {
					failed.Add(1)
					b.Logf("ADD %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		return time.Since(start), int(failed.Load())
	}
	b.ResetTimer()
	rewireTime, rewireFailed := parallel(func(i int) error { _, err := e.rt.Add(ctx, pods[i]); return err })
	directTime, directFailed := parallel(func(i int) error {
		for j, l := range direct.lists {
			if _, err := direct.cni.AddNetworkList(ctx, l, direct.rt(i, j, directNS[i].Path())); err != nil {
				return err
			}
		}
		return nil
	})
	b.StopTimer()
	fmt.Printf("%d concurrent ADDs (cluster + 1 macvlan): rewire %s, %d failed | direct %s, %d failed | ratio %.2f | daemon RSS idle %d MiB, peak %d MiB\n",
		n, rewireTime.Round(time.Millisecond), rewireFailed, directTime.Round(time.Millisecond), directFailed,
		float64(rewireTime)/float64(directTime), idle>>20, e.daemon.PeakRSS()>>20)
	for i := range n {
		must(b, e.rt.Del(ctx, pods[i]))
		direct.del(ctx, b, i, directNS[i].Path())
	}
	e.assertNoLeaks()
}

// BenchmarkHotplugLatency measures, over -samples plugs and unplugs, the time
// from the annotation PATCH returning to the interface being up with its
// address in the pod netns (and to it being gone).
func BenchmarkHotplugLatency(b *testing.B) {
	e := newEnv(b, envOpts{})
	e.createNAD("default", "hot-mv", e.macvlanRange("hot-mv", fmt.Sprintf("172.31.%d", e.n), 2, 254), nil)
	p := e.newPod("default", "hot-bench", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(b, err)
	poll := func(cond func(map[string]harness.Link) bool) time.Duration {
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			if l, err := harness.Links(p.NetNS); err == nil && cond(l) {
				return time.Since(start)
			}
			time.Sleep(time.Millisecond)
		}
		b.Fatal("timed out")
		return 0
	}
	var plug, unplug []time.Duration
	b.ResetTimer()
	for range *samples {
		setNetworks(b, p, "hot-mv")
		plug = append(plug, poll(func(l map[string]harness.Link) bool { return l["net1"].Up && len(l["net1"].Addrs) == 1 }))
		setNetworks(b, p, "")
		unplug = append(unplug, poll(func(l map[string]harness.Link) bool { _, ok := l["net1"]; return !ok }))
	}
	b.StopTimer()
	fmt.Printf("hot-plug over %d samples: plug median %.1f ms p90 %.1f ms | unplug median %.1f ms p90 %.1f ms\n",
		len(plug), ms(median(plug)), ms(p90(plug)), ms(median(unplug)), ms(p90(unplug)))
	must(b, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// BenchmarkPluginRoundTrip isolates Rewire's extra hop: a CNI CHECK of an
// unknown container through libcni -> rewire plugin -> daemon (which answers
// at once from its store), against libcni executing a reference plugin's
// VERSION (the floor of any plugin exec on this machine).
func BenchmarkPluginRoundTrip(b *testing.B) {
	e := newEnv(b, envOpts{})
	ctx := context.Background()
	netns, err := testutils.NewNS()
	must(b, err)
	defer func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) }()
	p := &harness.Pod{Namespace: "default", Name: "none", ContainerID: "roundtrip", NetNS: netns}
	var viaRewire, floor []time.Duration
	for range *samples {
		start := time.Now()
		if err := e.rt.Check(ctx, p); err == nil {
			b.Fatal("CHECK of an unknown container succeeded")
		}
		viaRewire = append(viaRewire, time.Since(start))
		start = time.Now()
		_, err := e.rt.CNI.GetVersionInfo(ctx, "loopback")
		must(b, err)
		floor = append(floor, time.Since(start))
	}
	fmt.Printf("round trip: rewire plugin + daemon median %.2f ms p90 %.2f ms | exec of a reference plugin median %.2f ms p90 %.2f ms\n",
		ms(median(viaRewire)), ms(p90(viaRewire)), ms(median(floor)), ms(p90(floor)))
}

// interleaved runs a then b for even i and b then a for odd i, so that
// neither side always runs first (warm caches, a starting burst of load).
func interleaved(i int, a, b func()) {
	if i%2 == 0 {
		a()
		b()
		return
	}
	b()
	a()
}

// scratchNS is a network namespace removed when the test ends, however it
// ends (a failed benchmark left one per sample before).
func scratchNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	must(t, err)
	t.Cleanup(func() { _ = n.Close(); _ = testutils.UnmountNS(n) })
	return n
}
