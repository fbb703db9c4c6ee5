package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/test/harness"
)

// BenchmarkClusterMigration migrates 10 pods per node from flannel (vxlan)
// to flannel host-gw with one NetworkMigration, on one node and then on
// all three, each pass rolled back after: it prints each pass's time, the
// machine's CPU split (every node's rewired, their plugins, the rest) and
// the switches' median and worst (cut-over and whole) from rewired's logs.
// Run it alone (go test -run '^$' -bench . ./test/cluster/): the test
// finishes its migration, after which A is gone.
func BenchmarkClusterMigration(b *testing.B) {
	if !nodes[0].Running("flanneld") {
		b.Fatal("flannel (vxlan) is not running: TestMigrateUndoFinish finished the cluster's migration; run the benchmark alone")
	}
	installB(b)
	for _, k := range []int{1, len(nodes)} {
		var pods []*pod
		for _, n := range nodes[:k] {
			for j := 0; j < 10; j++ {
				p := newPod(b, n, "default", fmt.Sprintf("bench%d-%d-%d", k, n.i+1, j), nil)
				labelPod(b, p, "bench", strconv.Itoa(k))
				pods = append(pods, p)
			}
		}
		name := fmt.Sprintf("bench-%d", k)
		migrationPass(b, name, "migration", k, len(pods), "Complete",
			"migrate", "create", name, "--from", "cluster", "--to", "kube-system/hostgw", "-l", "bench="+strconv.Itoa(k), "--max-per-node", "2")
		for _, p := range pods {
			waitKind(b, p, "veth")
		}
		migrationPass(b, name, "rollback", k, len(pods), "RolledBack", "migrate", "rollback", name)
		for _, p := range pods {
			waitKind(b, p, "bridge")
		}
		must(b, c.API.Dynamic.Resource(migration.GVR).Delete(context.Background(), name, metav1.DeleteOptions{}))
		for _, p := range pods {
			p.del(b)
		}
	}
}

// migrationPass runs kubectl rewire args and waits for the migration's
// phase with every pod switched, printing the figures of the pass.
func migrationPass(b *testing.B, name, what string, k, total int, phase string, args ...string) {
	b.Helper()
	own0, plugins0 := daemonsCPU()
	busy0, all0 := harness.MachineCPU(b)
	start := time.Now()
	cli(b, "", args...)
	waitMigration(b, name, phase, func(st migration.Status) bool {
		return st.Phase == phase && st.Switched == total && st.Failed == 0
	})
	took := time.Since(start)
	busy1, all1 := harness.MachineCPU(b)
	own1, plugins1 := daemonsCPU()
	own, plugins := (own1 - own0).Seconds(), (plugins1 - plugins0).Seconds()
	busy := float64(busy1-busy0) / 100
	cut, whole := switchTimes(b, start)
	fmt.Printf("%s of %d pods on %d node(s), 2 at a time per node: %s after %.2f s; CPUs %.0f%% busy (%.1f s: rewired %.2f s, its plugins %.2f s, the rest %.1f s); "+
		"%d switches: cut-over median %.0f ms worst %.0f ms, whole median %.0f ms worst %.0f ms\n",
		what, total, k, phase, took.Seconds(), 100*float64(busy1-busy0)/float64(all1-all0), busy, own, plugins, busy-own-plugins,
		len(whole), median(cut), slices.Max(append(cut, 0)), median(whole), slices.Max(append(whole, 0)))
	b.ReportMetric(took.Seconds(), fmt.Sprintf("%s-%dnodes-s", what, k))
}

// daemonsCPU sums every node's rewired CPU time and its plugins'.
func daemonsCPU() (own, plugins time.Duration) {
	for _, n := range nodes {
		own += n.daemon.CPU()
		plugins += n.daemon.ChildrenCPU()
	}
	return own, plugins
}

// switchTimes reads the cut-over and whole times of the switches every
// node's rewired logged since start.
func switchTimes(t testing.TB, since time.Time) (cut, whole []float64) {
	for _, n := range nodes {
		sc := bufio.NewScanner(strings.NewReader(n.daemon.Log()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e struct {
				Time      time.Time `json:"time"`
				Msg       string    `json:"msg"`
				CutOverMs float64   `json:"cutOverMs"`
				Ms        float64   `json:"ms"`
			}
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Msg == "switched primary network" && e.Time.After(since) {
				cut, whole = append(cut, e.CutOverMs), append(whole, e.Ms)
			}
		}
	}
	return cut, whole
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

// labelPod sets a label on a pod.
func labelPod(t testing.TB, p *pod, k, v string) {
	t.Helper()
	body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"labels": map[string]string{k: v}}})
	_, err := c.API.Client.CoreV1().Pods(p.Namespace).Patch(context.Background(), p.Name, types.MergePatchType, body, metav1.PatchOptions{})
	must(t, err)
}
