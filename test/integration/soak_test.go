package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rewire-cni/rewire/test/harness"
)

var (
	soakOps  = flag.Int("soak-ops", 400, "operations of TestSoak (make soak runs 2500)")
	soakSeed = flag.Int64("soak-seed", 0, "seed of TestSoak (0: from the clock; printed)")
)

// soakPod is one pod of the soak and what the test expects of it.
type soakPod struct {
	p        *harness.Pod
	added    bool
	networks []string
	switched bool // default-network names soak-sw (a live switch when running)
}

// TestSoak runs a seeded random mix of ADDs, DELs, networks edits (hot-plug)
// and default-network edits (live switches) from three workers (each owning
// some pods, as a runtime serialises one sandbox) while the daemon is killed
// (mid-operation) or restarted now and then. At the end every pod must match
// its annotations and, once all are deleted, nothing may be left.
func TestSoak(t *testing.T) {
	seed := *soakSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	e := newEnv(t, envOpts{})
	e.createNAD("default", "soak-a", e.macvlanRange("soak-a", "192.168.41", 2, 254), nil)
	e.createNAD("default", "soak-b", e.macvlanRange("soak-b", "192.168.42", 2, 254), nil)
	e.createNAD("default", "soak-sw", e.ptpConf("soak-sw"), nil)
	const workers, perWorker = 3, 4
	pods := make([][]*soakPod, workers)
	for w := range workers {
		for i := range perWorker {
			pods[w] = append(pods[w], &soakPod{p: e.newPod("default", fmt.Sprintf("soak-%d-%d", w, i), nil)})
		}
	}
	var ops, restarts atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		rng := rand.New(rand.NewSource(seed + int64(w)))
		wg.Go(func() {
			for ops.Load() < int64(*soakOps) && !t.Failed() {
				sp := pods[w][rng.Intn(perWorker)]
				err := soakOp(t, e, rng, sp)
				if err != nil {
					t.Errorf("seed %d: %s: %v", seed, sp.p.Name, err)
					return
				}
				ops.Add(1)
			}
		})
	}
	chaos := rand.New(rand.NewSource(seed - 1))
	for ops.Load() < int64(*soakOps) && !t.Failed() {
		time.Sleep(time.Duration(200+chaos.Intn(600)) * time.Millisecond)
		if chaos.Intn(2) == 0 {
			e.daemon.Kill() // mid-operation: the plugin sees the connection drop
		}
		e.restart(t, "")
		restarts.Add(1)
	}
	wg.Wait()
	fmt.Printf("soak: seed %d, %d operations, %d daemon restarts\n", seed, ops.Load(), restarts.Load())
	for _, ws := range pods {
		for _, sp := range ws {
			if sp.added {
				want := 1 + len(sp.networks)
				waitLinks(t, sp.p, fmt.Sprintf("%d interfaces and eth0 (seed %d)", want, seed), func(l map[string]harness.Link) bool {
					_, eth0 := l["eth0"]
					return len(l) == want && eth0
				})
				primary := fmt.Sprintf("cluster-%d", e.n)
				if sp.switched {
					primary = "default/soak-sw"
				}
				if hazard := waitPrimary(t, sp.p, primary, seed); hazard != "" {
					t.Logf("seed %d: pod %s could not switch (two IPAMs, one range): %s", seed, sp.p.Name, hazard)
				}
				must(t, retry11(func() error { return e.rt.Del(context.Background(), sp.p) }))
			}
		}
	}
	e.assertNoLeaks()
}

// soakOp does one random operation on a pod.
func soakOp(t *testing.T, e *env, rng *rand.Rand, sp *soakPod) error {
	ctx := context.Background()
	switch r := rng.Intn(10); {
	case !sp.added:
		sp.networks = randomNetworks(rng)
		setNetworks(t, sp.p, strings.Join(sp.networks, ","))
		// Pods start on the cluster network: a pod born on soak-sw would get
		// an address from soak-sw's own host-local store, which the cluster
		// network's store may have given to another pod (the two-IPAM caveat
		// of docs/live-switch.md), and could never switch back.
		sp.switched = false
		setDefaultNetwork(t, sp.p, "")
		time.Sleep(20 * time.Millisecond) // the pod informer sees the edit before the ADD
		err := retry11(func() error { _, err := e.rt.Add(ctx, sp.p); return err })
		sp.added = err == nil
		return err
	case r < 3:
		sp.added = false
		return retry11(func() error { return e.rt.Del(ctx, sp.p) })
	case r < 5:
		sp.switched = !sp.switched
		target := ""
		if sp.switched {
			target = "soak-sw"
		}
		setDefaultNetwork(t, sp.p, target)
		return nil
	default:
		sp.networks = randomNetworks(rng)
		setNetworks(t, sp.p, strings.Join(sp.networks, ","))
		return nil
	}
}

// waitPrimary waits until the pod's network-status names network as its
// primary. One exception is accepted and returned: a switch that failed
// because the target network's IPAM had the pod's address given to another
// pod (two independent host-local stores on one range, the caveat of
// docs/live-switch.md: a requested allocation moves host-local's
// next-address pointer back, so either store can hand out an address the
// other holds); the pod stays working where it was.
func waitPrimary(t testing.TB, p *harness.Pod, network string, seed int64) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := networkStatus(t, p)
		if len(st) > 0 && st[0].Name == network && st[0].Default && st[0].Interface == "eth0" {
			return ""
		}
		if time.Now().After(deadline) {
			evs, err := api.Client.CoreV1().Events(p.Namespace).List(context.Background(), metav1.ListOptions{
				FieldSelector: "involvedObject.name=" + p.Name + ",reason=SwitchFailed"})
			must(t, err)
			for _, ev := range evs.Items {
				if strings.Contains(ev.Message, "is not available") {
					return ev.Message
				}
			}
			t.Fatalf("seed %d: pod %s: network-status %+v, want primary %s", seed, p.Name, st, network)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randomNetworks(rng *rand.Rand) []string {
	var nets []string
	for _, n := range []string{"soak-a", "soak-b", "soak-a"} {
		if rng.Intn(2) == 0 {
			nets = append(nets, n)
		}
	}
	return nets
}

// retry11 retries an operation while the plugin answers "try again later"
// (the daemon restarting), as kubelet does.
func retry11(op func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := op()
		var te *types.Error
		if err == nil || !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
