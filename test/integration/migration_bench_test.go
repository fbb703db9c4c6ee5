package integration

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rewire-cni/rewire/pkg/daemon"
	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/test/harness"
)

var (
	migrationPods       = flag.Int("migration-pods", 100, "pods on the node in BenchmarkMigration")
	migrationMaxPerNode = flag.Int("migration-max-per-node", 4, "maxConcurrentPerNode of BenchmarkMigration's NetworkMigration")
	migrationProbes     = flag.Bool("migration-probes", true, "BenchmarkMigration probes every pod at 100 Hz (false: the migration alone)")
)

// BenchmarkMigration migrates every pod of one node (-migration-pods, 100)
// from the cluster network (bridge) to ptp with a NetworkMigration
// (-migration-max-per-node switches at once), then rolls it back, with a
// 100 Hz UDP probe to every pod from a client routed through the host
// (-migration-probes). It prints each pass's time from the kubectl rewire
// command to the status phase, the switches per second, how busy the
// machine's CPUs were, rewired's CPU time and RSS, and the probes lost, each
// with its send time and the switch steps of its pod, to place it (see
// docs/migration.md, "Measured", for the losses seen and their cause).
func BenchmarkMigration(b *testing.B) {
	if *daemonProfile != "" {
		b.Setenv(daemon.ProfileEnv, "1") // rewired inherits the environment
	}
	e := newEnv(b, envOpts{})
	e.createNAD("default", "mig-ptp", e.ptpConf(fmt.Sprintf("mig-ptp-%d", e.n)), nil)
	client := farClient(b, e)
	b.Cleanup(client.Close)
	ctx := context.Background()
	pods := make([]*migPod, *migrationPods)
	for i := range pods {
		p := e.newPod("default", fmt.Sprintf("migb-%d", i), nil)
		r, err := e.rt.Add(ctx, p)
		must(b, err)
		mp := &migPod{e: e, p: p, ip: primaryIP(b, r)}
		startEcho(b, p)
		if *migrationProbes {
			mp.probe, err = harness.StartProber(client.NS, mp.ip+":7777", 10*time.Millisecond)
			must(b, err)
		}
		pods[i] = mp
	}
	name := fmt.Sprintf("bench-%d", e.n)
	b.Cleanup(func() {
		_ = api.Dynamic.Resource(migration.GVR).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	pass := func(what, want, phase, network string, args ...string) {
		cpu, plugins := e.daemon.CPU(), e.daemon.ChildrenCPU()
		busy0, total0 := harness.MachineCPU(b)
		start := time.Now()
		cli(b, want, args...)
		st := waitMigration(b, name, phase, func(s migration.Status) bool { return s.Phase == phase })
		took := time.Since(start)
		busy1, total1 := harness.MachineCPU(b)
		if st.Switched != len(pods) || st.Failed != 0 {
			b.Fatalf("%s: %+v, want %d switched", what, st.Counts, len(pods))
		}
		fmt.Printf("%s of %d pods on one node, %d at a time: %s phase %s after %.2f s (%.1f switches/s); the machine's CPUs %.0f%% busy (%.1f s), of which rewired %.2f s and its plugins %.2f s; rewired RSS %.1f MiB, peak %.1f MiB\n",
			what, len(pods), *migrationMaxPerNode, name, phase, took.Seconds(), float64(len(pods))/took.Seconds(),
			100*float64(busy1-busy0)/float64(total1-total0), float64(busy1-busy0)/100,
			(e.daemon.CPU() - cpu).Seconds(), (e.daemon.ChildrenCPU() - plugins).Seconds(), float64(e.daemon.RSS())/(1<<20), float64(e.daemon.PeakRSS())/(1<<20))
		b.ReportMetric(took.Seconds(), what+"-s")
		for _, mp := range pods {
			assertOn(b, mp, network)
		}
	}
	if *migrationProbes {
		busy0, total0 := harness.MachineCPU(b)
		time.Sleep(2 * time.Second) // an observation window: the probes alone
		busy1, total1 := harness.MachineCPU(b)
		fmt.Printf("%d pods answering 100 Hz probes, nothing else: the machine's CPUs %.0f%% busy\n", len(pods), 100*float64(busy1-busy0)/float64(total1-total0))
	}
	if *daemonProfile != "" {
		_, err := e.daemon.Post("/debug/cpuprofile/start")
		must(b, err)
	}
	b.ResetTimer()
	pass("migration", "created", "Complete", "default/mig-ptp",
		"migrate", "create", name, "--from", "cluster", "--to", "default/mig-ptp", "--max-per-node", fmt.Sprint(*migrationMaxPerNode))
	pass("rollback", "rolling back", "RolledBack", fmt.Sprintf("cluster-%d", e.n), "migrate", "rollback", name)
	b.StopTimer()
	if *daemonProfile != "" {
		prof, err := e.daemon.Post("/debug/cpuprofile/stop")
		must(b, err)
		must(b, os.WriteFile(*daemonProfile+"-migration.pprof", prof, 0o644))
	}

	if *migrationProbes {
		reportProbes(b, e, pods)
	}
	for _, mp := range pods {
		must(b, e.rt.Del(ctx, mp.p))
	}
	client.Close()
	e.assertNoLeaks()
}

// reportProbes stops the pods' probes and prints what they lost, each lost
// probe with its send time and the switch steps of its pod.
func reportProbes(b *testing.B, e *env, pods []*migPod) {
	var sent, lost int
	for _, mp := range pods {
		st := mp.probe.Stop()
		sent, lost = sent+st.Sent, lost+st.Lost()
		for _, at := range st.LostAt {
			fmt.Printf("    %s: probe sent at %s lost (longest gap %.1f ms); its switch steps: %s\n", mp.p.Name,
				at.UTC().Format("15:04:05.000"), float64(st.MaxGap.Microseconds())/1000, switchSteps(e, mp.p))
		}
	}
	fmt.Printf("100 Hz probes to %d pods over the migration and the rollback: %d sent, %d lost\n", len(pods), sent, lost)
	b.ReportMetric(float64(lost), "probes-lost")
}

var stepLine = regexp.MustCompile(`"time":"[0-9-]+T([0-9:.]{12})[0-9]*Z".*"step":"switch:([a-z-]+)"`)

// switchSteps lists the times and names of the pod's switch steps from the
// daemon's log.
func switchSteps(e *env, p *harness.Pod) string {
	var out []string
	for _, l := range strings.Split(e.daemon.Log(), "\n") {
		if m := stepLine.FindStringSubmatch(l); m != nil && strings.Contains(l, `"pod":"`+p.Namespace+"/"+p.Name+`"`) {
			out = append(out, m[1]+" "+m[2])
		}
	}
	return strings.Join(out, ", ")
}
