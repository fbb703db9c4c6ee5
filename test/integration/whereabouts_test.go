package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

var ipPools = schema.GroupVersionResource{Group: "whereabouts.cni.cncf.io", Version: "v1alpha1", Resource: "ippools"}

// poolAllocations returns the whereabouts pool of the env's subnet as
// address -> "podref ifname" (whereabouts keeps its pools in the
// kubeconfig's namespace, kube-system here).
func (e *env) poolAllocations(t testing.TB) map[string]string {
	t.Helper()
	u, err := api.Dynamic.Resource(ipPools).Namespace("kube-system").Get(context.Background(), e.subnet+".0-24", metav1.GetOptions{})
	if err != nil {
		return map[string]string{}
	}
	allocs, _, _ := unstructuredMap(u.Object, "spec", "allocations")
	out := map[string]string{}
	for offset, v := range allocs {
		a, _ := v.(map[string]interface{})
		out[fmt.Sprintf("%s.%s", e.subnet, offset)] = fmt.Sprintf("%v %v", a["podref"], a["ifname"])
	}
	return out
}

func unstructuredMap(obj map[string]interface{}, path ...string) (map[string]interface{}, bool, error) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]interface{})
		if !ok {
			return nil, false, nil
		}
		cur = next
	}
	return cur, true, nil
}

// whereaboutsPtp is network B on whereabouts: ptp with the env's pool.
func (e *env) whereaboutsPtp(name string, ips bool) string {
	caps := ""
	if ips {
		caps = `"capabilities":{"ips":true},`
	}
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"disableCheck":true,"plugins":[{"type":"ptp","ipMasq":false,%s"ipam":%s}]}`,
		name, caps, e.whereaboutsIPAM())
}

// A and B both allocate from one whereabouts pool (cluster-wide ownership):
// a multi-homed pod switches A -> B -> A keeping its address under traffic,
// the pool holds that address exactly once for the pod throughout (B takes
// A's reservation over, it never allocates a second one), pods are created
// on both networks meanwhile and get other addresses, and every DEL
// releases what it held.
func TestSwitchWhereaboutsShared(t *testing.T) {
	e := newEnv(t, envOpts{clusterIPAM: "whereabouts"})
	ctx := context.Background()
	cluster := fmt.Sprintf("cluster-%d", e.n)
	e.createNAD("default", "net-b", e.whereaboutsPtp(fmt.Sprintf("b-%d", e.n), false), nil)
	annotations, secondaryTraffic := e.multiHomed(t)
	p := e.newPod("default", "wa-switch", annotations)
	r, err := e.rt.Add(ctx, p)
	must(t, err)
	x := primaryIP(t, r)
	startEcho(t, p)
	clients := secondaryTraffic(p)
	clients["eth0 through the host"] = startTraffic(t, farClient(t, e), x)
	clients["eth0 on A's bridge"] = startTraffic(t, nearClient(t, e), x)
	assertPool := func(when string, want map[string]string) {
		t.Helper()
		got := e.poolAllocations(t)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: whereabouts pool %v, want %v", when, got, want)
		}
	}
	assertPool("after ADD", map[string]string{x: "default/wa-switch eth0"})

	from := time.Now()
	setDefaultNetwork(t, p, "net-b")
	t.Logf("A->B: %s", waitEvents(t, p, "NetworkSwitched", 1)[0])
	e.assertPrimary(t, p, x, "default/net-b", nil, nil)
	assertPool("on B", map[string]string{x: "default/wa-switch eth0"})

	// New pods on either network get other addresses from the one pool.
	onA := e.newPod("default", "wa-on-a", nil)
	onB := e.newPod("default", "wa-on-b", map[string]string{selection.DefaultNetworkAnnotation: "net-b"})
	ra, err := e.rt.Add(ctx, onA)
	must(t, err)
	rb, err := e.rt.Add(ctx, onB)
	must(t, err)
	ya, yb := primaryIP(t, ra), primaryIP(t, rb)
	if ya == x || yb == x || ya == yb {
		t.Fatalf("addresses given: switched pod %s, new on A %s, new on B %s: one owner each expected", x, ya, yb)
	}

	setDefaultNetwork(t, p, "")
	t.Logf("B->A: %s", waitEvents(t, p, "NetworkSwitched", 2)[1])
	e.assertPrimary(t, p, x, cluster, nil, nil)
	assertPool("back on A", map[string]string{x: "default/wa-switch eth0", ya: "default/wa-on-a eth0", yb: "default/wa-on-b eth0"})

	stopClients(t, clients, from)
	for _, q := range []*harness.Pod{p, onA, onB} {
		must(t, e.rt.Del(ctx, q))
	}
	assertPool("after the DELs", map[string]string{})
	e.assertNoLeaks()
}

// A on host-local, B on whereabouts, which cannot be asked for an address:
// a keep-ip switch is refused saying what would work, with or without an
// "ips" capability declared (whereabouts ignores it); the pod stays on A
// with its address, and nothing is left in B's pool.
func TestSwitchHostLocalToWhereabouts(t *testing.T) {
	for _, tc := range []struct {
		name, reason, msg string
		ips               bool
	}{
		{"no-ips-capability", "SwitchRejected", "same IPAM pool", false},
		{"ips-ignored", "SwitchRejected", "ignores requested addresses", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			ctx := context.Background()
			b := fmt.Sprintf("b-%d", e.n)
			// B's pool is X's subnet, but it allocates from .200 on: whereabouts
			// cannot give X, whatever it is asked.
			conf := strings.ReplaceAll(e.whereaboutsPtp(b, tc.ips), `"range_start":"`+e.subnet+`.2"`, `"range_start":"`+e.subnet+`.200"`)
			e.createNAD("default", "net-b", conf, nil)
			p := e.newPod("default", "hl-wa-"+tc.name, nil)
			r, err := e.rt.Add(ctx, p)
			must(t, err)
			x := primaryIP(t, r)
			setDefaultNetwork(t, p, "net-b")
			if msg := waitEvents(t, p, tc.reason, 1)[0]; !strings.Contains(msg, tc.msg) {
				t.Fatalf("%s event %q does not say %q", tc.reason, msg, tc.msg)
			}
			e.assertOnA(t, p, x, b)
			if pool := e.poolAllocations(t); len(pool) > 0 {
				t.Fatalf("whereabouts pool holds %v after the switch was undone", pool)
			}
			must(t, e.rt.Del(ctx, p))
			e.assertNoLeaks()
		})
	}
}
