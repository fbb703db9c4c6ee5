package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// restart (re)starts the daemon with the given test faults ("" for none).
func (e *env) restart(t testing.TB, faults string) {
	t.Helper()
	e.daemon.Stop()
	e.daemon.ExtraArgs = nil
	if faults != "" {
		e.daemon.ExtraArgs = []string{"--test-faults", faults}
	}
	must(t, e.daemon.Start())
}

var actions = []string{"kill", "fail"}

// A crash (SIGKILL) or a failure at every step of ADD: after a restart and
// the runtime's DEL nothing is left.
func TestFaultsDuringAdd(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.31"), nil)
	steps := []string{"add:before:eth0", "add:after:eth0", "add:before:net1", "add:after:net1", "add:completing"}
	for _, step := range steps {
		for _, action := range actions {
			t.Run(step+"="+action, func(t *testing.T) {
				name := strings.NewReplacer(":", "-", "=", "-").Replace("a-" + step + "-" + action)
				p := e.newPod("default", name, map[string]string{selection.NetworksAnnotation: "mv"})
				e.restart(t, step+"="+action)
				if _, err := e.rt.Add(context.Background(), p); err == nil {
					t.Fatal("ADD succeeded despite the fault")
				}
				e.restart(t, "")
				must(t, e.rt.Del(context.Background(), p))
				e.assertNoLeaks()
			})
		}
	}
}

// A crash or a failure at every step of DEL: the DEL reports it, and the
// runtime's retry after a restart removes everything.
func TestFaultsDuringDel(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.32"), nil)
	steps := []string{"del:before:net1", "del:after:net1", "del:before:eth0", "del:after:eth0"}
	for _, step := range steps {
		for _, action := range actions {
			t.Run(step+"="+action, func(t *testing.T) {
				name := strings.NewReplacer(":", "-").Replace("d-" + step + "-" + action)
				p := e.newPod("default", name, map[string]string{selection.NetworksAnnotation: "mv"})
				e.restart(t, "")
				_, err := e.rt.Add(context.Background(), p)
				must(t, err)
				e.restart(t, step+"="+action)
				if err := e.rt.Del(context.Background(), p); err == nil {
					t.Fatal("DEL reported success despite the fault")
				}
				e.restart(t, "")
				must(t, e.rt.Del(context.Background(), p))
				e.assertNoLeaks()
			})
		}
	}
}

// A crash or failure while hot-plugging or unplugging: once the daemon is
// back (or retries), the pod matches its annotation and nothing leaks.
func TestFaultsDuringHotplug(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.33"), nil)
	cases := []struct {
		step, action string
		plug         bool
	}{
		{"add:before:net1", "kill", true}, {"add:after:net1", "kill", true},
		{"add:before:net1", "fail", true}, {"add:after:net1", "fail", true},
		{"del:before:net1", "kill", false}, {"del:after:net1", "kill", false},
		{"del:before:net1", "fail", false}, {"del:after:net1", "fail", false},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s=%s", c.step, c.action), func(t *testing.T) {
			var ann map[string]string
			if !c.plug {
				ann = map[string]string{selection.NetworksAnnotation: "mv"}
			}
			p := e.newPod("default", fmt.Sprintf("h-%d", i), ann)
			e.restart(t, "")
			_, err := e.rt.Add(context.Background(), p)
			must(t, err)
			e.restart(t, c.step+"="+c.action)
			want := 1
			if c.plug {
				setNetworks(t, p, "mv")
				want = 2
			} else {
				setNetworks(t, p, "")
			}
			if c.action == "kill" {
				waitDead(t, e.daemon)
				e.restart(t, "")
			}
			// "fail" is retried with backoff by the same daemon.
			waitLinks(t, p, fmt.Sprintf("%d interfaces", want), func(l map[string]harness.Link) bool { return len(l) == want })
			must(t, e.rt.Del(context.Background(), p))
			e.assertNoLeaks()
		})
	}
}

func waitDead(t testing.TB, d *harness.Daemon) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, err := d.Get("/healthz"); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the daemon did not die at the injected fault")
}
