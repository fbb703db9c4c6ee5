package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/pkg/memlimit"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// rewired started in a cgroup with a memory limit, and no
// maxConcurrentDelegates in its config, caps the delegates it runs at once
// at memlimit.Slots of that limit (2 for 112 MiB): 8 pods with a secondary
// network ADDed at the same time all succeed, the cgroup never holds more
// than 2 delegates started by rewired (sampled every millisecond from its
// process list; it held 2, so the requests did queue), and nothing was
// OOM-killed.
func TestDelegateCapFromMemoryLimit(t *testing.T) {
	const limit, pods = 112 << 20, 8
	want := memlimit.Slots(limit)
	e := newEnv(t, envOpts{noStart: true})
	cg, err := harness.NewMemoryCgroup(fmt.Sprintf("rewire-it-%d-%d", os.Getpid(), e.n), limit)
	must(t, err)
	e.daemon.Cgroup = cg
	must(t, e.daemon.Start())
	t.Cleanup(func() {
		e.daemon.Stop()
		if err := cg.Remove(); err != nil {
			t.Errorf("removing the test's cgroup: %v", err)
		}
	})
	if line := fmt.Sprintf(`"maxConcurrentDelegates":%d`, want); !strings.Contains(e.daemon.Log(), line) {
		t.Fatalf("rewired did not log its cap (%s):\n%s", line, e.daemon.Log())
	}
	e.createNAD("default", "cap-mv", e.macvlanConf("cap-mv", "10.252.9"), nil)

	stop, peak := make(chan struct{}), make(chan int)
	go func() { peak <- peakChildren(t, cg, e.daemon.PID(), stop) }()
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for i := range pods {
		p := e.newPod("default", fmt.Sprintf("cap-%d", i), map[string]string{selection.NetworksAnnotation: "cap-mv"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.rt.Add(context.Background(), p); err != nil {
				errs <- fmt.Errorf("ADD %s: %w", p.Name, err)
				return
			}
			if err := e.rt.Del(context.Background(), p); err != nil {
				errs <- fmt.Errorf("DEL %s: %w", p.Name, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := <-peak; got != want {
		t.Errorf("at most %d delegates ran at once, want exactly the cap %d (more: not capped; fewer: the requests never queued)", got, want)
	}
	if n, err := cg.OOMKills(); err != nil || n != 0 {
		t.Errorf("OOM kills in rewired's cgroup: %d (%v)", n, err)
	}
	e.assertNoLeaks()
}

// peakChildren samples the cgroup every millisecond until stop and returns
// the most processes seen at once whose parent is pid (the delegates
// rewired started; their IPAM plugins are their children).
func peakChildren(t *testing.T, cg *harness.MemoryCgroup, pid int, stop <-chan struct{}) int {
	peak := 0
	for {
		select {
		case <-stop:
			return peak
		case <-time.After(time.Millisecond):
		}
		procs, err := cg.Procs()
		if err != nil {
			t.Error(err)
			return peak
		}
		n := 0
		for _, p := range procs {
			if ppid, err := harness.ParentPID(p); err == nil && ppid == pid {
				n++
			}
		}
		peak = max(peak, n)
	}
}
