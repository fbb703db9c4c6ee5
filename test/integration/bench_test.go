package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/testutils"

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

var benchConfig = flag.String("bench-config", "", "extra daemon config YAML for BenchmarkAddOverhead")

func benchAdd(b *testing.B, secondaries int) {
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
	time.Sleep(500 * time.Millisecond) // let the daemon's informer see the pods
	before, err := e.daemon.Counters()
	must(b, err)

	ctx := context.Background()
	var viaRewire, viaDirect []time.Duration
	b.ResetTimer()
	for _, p := range pods {
		start := time.Now()
		_, err := e.rt.Add(ctx, p)
		viaRewire = append(viaRewire, time.Since(start))
		must(b, err)

		ns, err := testutils.NewNS()
		must(b, err)
		start = time.Now()
		direct.add(ctx, b, ns.Path())
		viaDirect = append(viaDirect, time.Since(start))
		direct.del(ctx, b, ns.Path())
		_ = ns.Close()
		_ = testutils.UnmountNS(ns)
	}
	b.StopTimer()
	e.waitStatusFlushed(b, pods)
	after, err := e.daemon.Counters()
	must(b, err)
	for _, p := range pods {
		must(b, e.rt.Del(ctx, p))
	}
	dm, rm := median(viaDirect), median(viaRewire)
	perAdd := func(k string) float64 { return float64(after[k]-before[k]) / float64(len(pods)) }
	fmt.Printf("ADD secondaries=%d samples=%d: direct median %.2f ms p90 %.2f ms | rewire median %.2f ms p90 %.2f ms | overhead median %.2f ms | API per ADD: %.2f writes, %.2f reads | daemon RSS %d MiB\n",
		secondaries, len(pods), ms(dm), ms(p90(viaDirect)), ms(rm), ms(p90(viaRewire)), ms(rm-dm),
		perAdd("writes"), perAdd("reads"), e.daemon.RSS()>>20)
	if benchLog {
		fmt.Println(tail(e.daemon.Log(), 8))
	}
	b.ReportMetric(ms(rm-dm), "overhead-ms")
	b.ReportMetric(perAdd("writes"), "api-writes/add")
	b.ReportMetric(perAdd("reads"), "api-reads/add")
}

// directCaller runs the cluster network and the NADs' configs straight
// through libcni, as a runtime without Rewire would.
type directCaller struct {
	cni   *libcni.CNIConfig
	lists []*libcni.NetworkConfigList
	n     int
}

func (e *env) directDelegates(b *testing.B, nads []string) *directCaller {
	cluster, err := libcni.ConfListFromBytes([]byte(e.clusterConf()))
	must(b, err)
	d := &directCaller{cni: libcni.NewCNIConfigWithCacheDir([]string{tools}, filepath.Join(e.dir, "direct-cache"), nil),
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

func (d *directCaller) rt(i int, netns string) *libcni.RuntimeConf {
	ifName := "eth0"
	if i > 0 {
		ifName = fmt.Sprintf("net%d", i)
	}
	return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("direct%d", d.n), NetNS: netns, IfName: ifName}
}

func (d *directCaller) add(ctx context.Context, b *testing.B, netns string) {
	d.n++
	for i, l := range d.lists {
		_, err := d.cni.AddNetworkList(ctx, l, d.rt(i, netns))
		must(b, err)
	}
}

func (d *directCaller) del(ctx context.Context, b *testing.B, netns string) {
	for i := len(d.lists) - 1; i >= 0; i-- {
		must(b, d.cni.DelNetworkList(ctx, d.lists[i], d.rt(i, netns)))
	}
}

// waitStatusFlushed waits until every pod has its network-status.
func (e *env) waitStatusFlushed(b *testing.B, pods []*harness.Pod) {
	for _, p := range pods {
		networkStatus(b, p)
	}
	time.Sleep(300 * time.Millisecond) // events are sent asynchronously too
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }
func p90(d []time.Duration) time.Duration    { return quantile(d, 0.9) }

func quantile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func init() {
	if os.Getenv("REWIRE_BENCH_LOG") != "" {
		benchLog = true
	}
}

var benchLog bool
