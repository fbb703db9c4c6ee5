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
	// soak-sw shares the cluster network's IPAM store (host-local keeps one
	// per network name and dataDir): pods start on either network and get
	// unique addresses, and a switch hands the reservation over.
	e.createNAD("default", "soak-sw", e.ptpConf(fmt.Sprintf("cluster-%d", e.n)), nil)
	const workers, perWorker = 3, 4
	pods := make([][]*soakPod, workers)
	for w := range workers {
		for i := range perWorker {
			pods[w] = append(pods[w], &soakPod{p: e.newPod("default", fmt.Sprintf("soak-%d-%d", w, i), nil)})
		}
	}
	var ops, restarts atomic.Int64
	var wg sync.WaitGroup
	stopSampling := sampleAddresses(t, pods, seed)
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
	samples := stopSampling()
	fmt.Printf("soak: seed %d, %d operations, %d daemon restarts, %d address samples\n", seed, ops.Load(), restarts.Load(), samples)
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
				waitPrimary(t, sp.p, primary, seed)
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
		// Pods start on either network.
		sp.switched = rng.Intn(2) == 0
		target := ""
		if sp.switched {
			target = "soak-sw"
		}
		setDefaultNetwork(t, sp.p, target)
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
// primary on eth0.
func waitPrimary(t testing.TB, p *harness.Pod, network string, seed int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := networkStatus(t, p)
		if len(st) > 0 && st[0].Name == network && st[0].Default && st[0].Interface == "eth0" {
			return
		}
		if time.Now().After(deadline) {
			evs, err := api.Client.CoreV1().Events(p.Namespace).List(context.Background(), metav1.ListOptions{
				FieldSelector: "involvedObject.name=" + p.Name + ",type=Warning"})
			must(t, err)
			var msgs []string
			for _, ev := range evs.Items {
				msgs = append(msgs, ev.Reason+": "+ev.Message)
			}
			t.Fatalf("seed %d: pod %s: network-status %+v, want primary %s; warnings: %q", seed, p.Name, st, network, msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sampleAddresses checks, every 20 ms until stopped, that no address is
// held by two pods: an address on interfaces of two pods in two samples in
// a row fails the test (one sample may straddle one pod's DEL and another's
// ADD of a released address). It returns the stop function, which reports
// how many samples were taken.
func sampleAddresses(t *testing.T, pods [][]*soakPod, seed int64) (stop func() int) {
	done, finished := make(chan struct{}), make(chan int)
	go func() {
		n, prev := 0, map[string]string{}
		for {
			select {
			case <-done:
				finished <- n
				return
			case <-time.After(20 * time.Millisecond):
			}
			n++
			dup := map[string]string{}
			owner := map[string]string{}
			for _, ws := range pods {
				for _, sp := range ws {
					links, err := harness.Links(sp.p.NetNS)
					if err != nil {
						continue
					}
					for _, l := range links {
						for _, a := range l.Addrs {
							if o, ok := owner[a]; ok && o != sp.p.Name {
								dup[a] = o + " and " + sp.p.Name
							}
							owner[a] = sp.p.Name
						}
					}
				}
			}
			for a, pair := range dup {
				if prev[a] == pair {
					t.Errorf("seed %d: address %s held by pods %s", seed, a, pair)
				}
			}
			prev = dup
		}
	}()
	return func() int { close(done); return <-finished }
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
