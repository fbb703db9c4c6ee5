package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// probeInterval is each pair's UDP probe rate (250 Hz).
const probeInterval = 4 * time.Millisecond

// replyTimeout is how long a probe's reply may take before it counts as
// lost (a step is judged that long after it ended; on a saturated 2-core
// machine replies come up to ~120 ms late).
const replyTimeout = time.Second

// TestMigrateUndoFinish moves a three-node flannel (vxlan) cluster to a
// second CNI (flannel host-gw, ptp) without restarting a pod, as an
// operator would: B installed beside A, a pod switched by hand, a canary
// node, every node, a rollback onto the stock flannel config, forward
// again, and the finish (A's daemon and config removed from every node).
// Pods are created and deleted meanwhile. Every ordered pair of pods (same
// node and across nodes) is probed at 250 Hz and every pod keeps a TCP
// stream to a pod of another node throughout: no probe may be lost at any
// step, no stream may break, every pod keeps its IP, and after the pods'
// DELs nothing is left on any node.
func TestMigrateUndoFinish(t *testing.T) {
	ctx := context.Background()
	m := newMesh(probeInterval)
	var steady []*pod
	for _, n := range nodes {
		for j := 0; j < 2; j++ {
			p := newPod(t, n, "default", fmt.Sprintf("web-%d-%d", n.i+1, j), nil)
			steady = append(steady, p)
			m.add(t, p, true)
		}
	}
	m.waitFlowing(t, 15*time.Second)
	ips := map[*pod]string{}
	for _, p := range steady {
		ips[p] = p.IP.String()
	}
	s := &steps{t: t, m: m, last: time.Now()}

	// flanneld host-gw replaces each route to another node that vxlan's
	// had (RouteDel + RouteAdd): probes across nodes in flight at that
	// instant are flannel's to lose, reported, not failed.
	s.runLossy("install B beside A (flanneld host-gw, its config list, a NAD)", func() { installB(t) })

	held := newPod(t, nodes[2], "default", "held", nil)
	m.add(t, held, false)
	s.run("a pod switched from flannel by hand; 1,000 pods created on its node's flannel after it", func() {
		annotate(t, held, map[string]interface{}{selection.DefaultNetworkAnnotation: "kube-system/hostgw"})
		waitKind(t, held, "veth")
		holdsAfterChurn(t, held, 1000)
	})

	s.run("canary node (newPods: to), pods created and deleted meanwhile", func() {
		cli(t, "created", "migrate", "create", "to-hostgw", "--from", "cluster", "--to", "kube-system/hostgw",
			"--node-selector", "canary=true", "--max-per-node", "2", "--new-pods", "to")
		churn(t, m, nodes[0], "canary", func() {
			waitMigration(t, "to-hostgw", "Complete on the canary", func(st migration.Status) bool {
				return st.Phase == "Complete" && len(st.Nodes) == 1
			})
		})
		for _, p := range podsOn(steady, nodes[0]) {
			waitKind(t, p, "veth")
		}
	})

	s.run("every node", func() {
		patchMigration(t, "to-hostgw", map[string]interface{}{"nodeSelector": nil})
		churn(t, m, nodes[1], "all", func() {
			waitMigration(t, "to-hostgw", "Complete on every node", func(st migration.Status) bool {
				return st.Phase == "Complete" && len(st.Nodes) == 3 && st.Total == st.Switched
			})
		})
		for _, p := range steady {
			waitKind(t, p, "veth")
		}
	})

	s.run("rollback onto the stock flannel config", func() {
		patchMigration(t, "to-hostgw", map[string]interface{}{"rollback": true})
		waitMigration(t, "to-hostgw", "RolledBack", func(st migration.Status) bool {
			return st.Phase == "RolledBack" && len(st.Nodes) == 3 && st.Total == st.Switched
		})
		for _, p := range steady {
			waitKind(t, p, "bridge")
		}
	})

	s.run("forward again", func() {
		patchMigration(t, "to-hostgw", map[string]interface{}{"rollback": false})
		waitMigration(t, "to-hostgw", "Complete again", func(st migration.Status) bool {
			return st.Phase == "Complete" && len(st.Nodes) == 3 && st.Total == st.Switched
		})
		for _, p := range steady {
			waitKind(t, p, "veth")
		}
	})

	s.run("finish: A's daemon and config removed from every node", func() {
		for _, n := range nodes {
			finishNode(t, n)
		}
		waitRoutes(t, "eth0")
		err := c.API.Dynamic.Resource(migration.GVR).Delete(ctx, "to-hostgw", metav1.DeleteOptions{})
		must(t, err)
		for _, n := range nodes { // new pods start on B
			p := newPod(t, n, "default", "after-"+n.Name, nil)
			if k := p.hostKind(t); k != "veth" {
				t.Errorf("%s created after the finish is on a %s, want B's routed veth", p, k)
			}
			m.add(t, p, false)
			steady = append(steady, p)
		}
		time.Sleep(2 * time.Second) // traffic over B alone
	})

	for p, ip := range ips {
		if p.IP.String() != ip || podIP(t, p) != ip {
			t.Errorf("%s has %s, had %s", p, podIP(t, p), ip)
		}
	}
	if errs := m.streamErrors(); len(errs) > 0 {
		t.Errorf("TCP streams broke:\n%s", strings.Join(errs, "\n"))
	}
	s.report()
	for _, p := range append(steady, held) {
		m.remove(p) // its losses were counted step by step
	}
	for _, p := range append(steady, held) {
		p.del(t)
	}
	for _, n := range nodes {
		assertClean(t, n)
	}
}

// steps runs the test's steps and asserts that no probe was lost in each.
type steps struct {
	t     *testing.T
	m     *mesh
	last  time.Time
	lines []string
}

func (s *steps) run(name string, f func()) {
	s.t.Helper()
	if lost := s.measure(name, f); len(lost) > 0 {
		s.t.Errorf("%s: probes lost:\n%s", name, strings.Join(lost, "\n"))
	}
}

// runLossy is run for a step whose losses are not Rewire's: they are
// logged only.
func (s *steps) runLossy(name string, f func()) {
	s.t.Helper()
	if lost := s.measure(name, f); len(lost) > 0 {
		s.t.Logf("%s: probes lost (not Rewire's):\n%s", name, strings.Join(lost, "\n"))
	}
}

// measure runs f and counts the probes since the previous step ended (the
// steps cover the test without gaps). With probes lost, the kernel's drop
// counters that grew meanwhile are reported beside them.
func (s *steps) measure(name string, f func()) []string {
	s.t.Helper()
	from, before := s.last, s.drops()
	f()
	to := time.Now()
	s.last = to
	time.Sleep(time.Until(to.Add(replyTimeout))) // the last probes' replies may still come
	sent, lost := s.m.window(from, to)
	line := fmt.Sprintf("%-85s %6.1f s  same node %7d sent %3d lost  across nodes %7d sent %3d lost", name, to.Sub(from).Seconds(),
		sent["same-node"], sent["same-node lost"], sent["cross-node"], sent["cross-node lost"])
	s.lines = append(s.lines, line)
	s.t.Log(line)
	if grown := grownCounters(before, s.drops()); len(lost) > 0 {
		lost = append(lost, "kernel drop counters grown meanwhile: "+cmp.Or(grown, "none"))
	}
	return lost
}

// drops reads the kernel's drop counters of every node and mesh pod.
func (s *steps) drops() map[string]uint64 {
	nss := map[string]ns.NetNS{}
	for _, n := range nodes {
		nss[n.Name] = n.NetNS
	}
	s.m.mu.Lock()
	for _, p := range s.m.pods {
		nss[p.String()] = p.NetNS
	}
	s.m.mu.Unlock()
	return dropCounters(s.t, nss)
}

func (s *steps) report() {
	s.t.Logf("probes per step (UDP at %d Hz per ordered pair):\n%s", int(time.Second/probeInterval), strings.Join(s.lines, "\n"))
}

// churn creates a pod on n every 500 ms while f runs, deleting every other
// one again at once: each joins the mesh as soon as its ADD returned, and
// none of its pairs may lose a probe. The rest are deleted after f.
func churn(t *testing.T, m *mesh, n *node, prefix string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	var made []*pod
	gone := func(p *pod) {
		if lost := m.remove(p); len(lost) > 0 {
			t.Errorf("%s, created during the migration: %s", p, strings.Join(lost, "; "))
		}
		p.del(t)
	}
	for i := 0; ; i++ {
		p := newPod(t, n, "default", fmt.Sprintf("%s-%d", prefix, i), nil)
		m.join(t, p, false, false)
		if i%2 == 1 {
			gone(p)
		} else {
			made = append(made, p)
		}
		select {
		case <-done:
			for _, p := range made {
				gone(p)
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitKind waits until the node routes the pod's IP to a link of kind
// ("bridge": flannel's cni0, A; "veth": a ptp veth, B).
func waitKind(t testing.TB, p *pod, kind string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for p.hostKind(t) != kind {
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s: routed to a %s, want a %s", p, p.node.Name, p.hostKind(t), kind)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// installB starts B on every node (a flanneld host-gw and its config list)
// and creates its NAD, unless that was done already.
func installB(t testing.TB) {
	t.Helper()
	if nodes[0].Running("flanneld-hostgw") {
		return
	}
	for _, n := range nodes {
		must(t, os.WriteFile(n.Path(hostgwConfFile), []byte(hostgwConflist), 0o644))
		must(t, n.startFlannel("flanneld-hostgw", "host-gw", "/run/flannel/hostgw.env", hostgwPrefix, true))
	}
	for _, n := range nodes {
		must(t, n.WaitFile("/run/flannel/hostgw.env", 30*time.Second))
	}
	createNAD(t, "kube-system", "hostgw", "")
	waitRoutes(t, "eth0") // host-gw replaced vxlan's routes to the other nodes
}

// waitRoutes waits until every node routes every other node's podCIDR
// through dev.
func waitRoutes(t testing.TB, dev string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for _, o := range nodes {
			if o == n {
				continue
			}
			ip, _, _ := net.ParseCIDR(o.PodCIDR)
			for {
				got, err := n.RouteDev(ip)
				must(t, err)
				if got == dev {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s routes %s through %q, want %s", n.Name, o.PodCIDR, got, dev)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// finishNode removes A from a node as the run book says: flanneld (vxlan)
// stopped, flanneld (host-gw) restarted so that it replaces any route
// flannel.1 still held, flannel.1 deleted, A's config list removed and
// rewired pointed at B's.
func finishNode(t testing.TB, n *node) {
	t.Helper()
	n.StopProcess("flanneld")
	n.StopProcess("flanneld-hostgw")
	must(t, n.startFlannel("flanneld-hostgw", "host-gw", "/run/flannel/hostgw.env", hostgwPrefix, true))
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := n.Exec("ip", "route", "show", "dev", "flannel.1")
		must(t, err)
		if strings.TrimSpace(out) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: routes still through flannel.1:\n%s", n.Name, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, err := n.Exec("ip", "link", "del", "flannel.1")
	must(t, err)
	must(t, os.Remove(n.Path(flannelConfFile)))
	n.daemon.Stop()
	must(t, n.startRewired(hostgwConfFile, "/run/flannel/hostgw.env"))
}

// holdsAfterChurn creates and deletes count sandboxes on the held pod's
// node, on its cluster network (flannel): first more than its range holds
// by flannel's plugin alone (its allocator goes round past the held
// address), the rest through Rewire. None may fail, none may get the held
// pod's address, and that address stays reserved in flannel's host-local
// store (its reservation goes at the held pod's DEL).
func holdsAfterChurn(t *testing.T, held *pod, count int) {
	t.Helper()
	const direct = 300 // a /24 holds 253
	n := held.node
	store := n.Path("/var/lib/cni/networks/cbr0")
	if _, err := os.Stat(filepath.Join(store, held.IP.String())); err != nil {
		t.Fatalf("the switched pod's %s is not reserved in flannel's store: %v", held.IP, err)
	}
	seen := map[string]int{}
	for _, ip := range flannelChurn(t, n, direct) {
		seen[ip]++
	}
	churnSandboxes(t, n, "churn", count-direct, func(ip string) { seen[ip]++ })
	if seen[held.IP.String()] > 0 {
		t.Errorf("flannel handed out %s, which the switched pod %s holds", held.IP, held)
	}
	t.Logf("%d sandboxes on %s's flannel (%d by flannel alone, %d through Rewire) got %d distinct addresses; %s stayed reserved",
		count, n.Name, direct, count-direct, len(seen), held.IP)
	if _, err := os.Stat(filepath.Join(store, held.IP.String())); err != nil {
		t.Errorf("after the churn, %s is no longer reserved in flannel's store: %v", held.IP, err)
	}
}

// annotate merge-patches a pod's annotations (nil removes one).
func annotate(t testing.TB, p *pod, ann map[string]interface{}) {
	t.Helper()
	body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"annotations": ann}})
	_, err := c.API.Client.CoreV1().Pods(p.Namespace).Patch(context.Background(), p.Name, types.MergePatchType, body, metav1.PatchOptions{})
	must(t, err)
}

func patchMigration(t testing.TB, name string, spec map[string]interface{}) {
	t.Helper()
	body, _ := json.Marshal(map[string]interface{}{"spec": spec})
	_, err := c.API.Dynamic.Resource(migration.GVR).Patch(context.Background(), name, types.MergePatchType, body, metav1.PatchOptions{})
	must(t, err)
}

func waitMigration(t testing.TB, name, what string, cond func(migration.Status) bool) migration.Status {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	var st migration.Status
	for time.Now().Before(deadline) {
		u, err := c.API.Dynamic.Resource(migration.GVR).Get(context.Background(), name, metav1.GetOptions{})
		must(t, err)
		m, err := migration.FromUnstructured(u)
		must(t, err)
		if st = m.Status; cond(st) {
			return st
		}
		time.Sleep(200 * time.Millisecond)
	}
	raw, _ := json.MarshalIndent(st, "", "  ")
	t.Fatalf("migration %s never got %s; status %s", name, what, raw)
	return st
}

// cli runs kubectl rewire and checks that it succeeds saying want.
func cli(t testing.TB, want string, args ...string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "kubectl-rewire"), append(args, "--kubeconfig", c.Kubeconfig, "--timeout", "20s")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), want) {
		t.Fatalf("kubectl rewire %v: %v\n%s", args, err, out)
	}
}

func podsOn(pods []*pod, n *node) []*pod {
	var out []*pod
	for _, p := range pods {
		if p.node == n {
			out = append(out, p)
		}
	}
	return out
}
