package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/selection"
)

// parallelEnv is an env whose daemon runs with parallelAttach and finds
// "timedmv" first in its bin dirs: macvlan behind a wrapper that sleeps
// 300 ms and logs when each ADD and DEL starts and ends.
func parallelEnv(t *testing.T) (*env, string) {
	e := newEnv(t, envOpts{noStart: true})
	wrapDir := filepath.Join(e.dir, "wrapbin")
	must(t, os.MkdirAll(wrapDir, 0o755))
	logFile := filepath.Join(e.dir, "delegates.log")
	script := fmt.Sprintf(`#!/bin/sh
case "$CNI_COMMAND" in ADD|DEL) echo "$CNI_COMMAND $CNI_IFNAME start $(date +%%s%%N)" >> %[1]s; sleep 0.3 ;; esac
out=$(%[2]s/macvlan)
rc=$?
case "$CNI_COMMAND" in ADD|DEL) echo "$CNI_COMMAND $CNI_IFNAME end $(date +%%s%%N)" >> %[1]s ;; esac
printf '%%s' "$out"
exit $rc
`, logFile, tools)
	must(t, os.WriteFile(filepath.Join(wrapDir, "timedmv"), []byte(script), 0o755))
	confDir := filepath.Join(e.dir, "net.d")
	must(t, writeConfig(e, fmt.Sprintf("clusterNetwork: %s\nconfDir: %s\nbinDirs: [%s, %s]\ndeviceInfoDir: %s\ncniDir: %s\nparallelAttach: true\n",
		confDir, confDir, wrapDir, tools, filepath.Join(e.dir, "devinfo"), e.multusDir())))
	must(t, e.daemon.Start())
	return e, logFile
}

func (e *env) timedNAD(name, subnet, master string) {
	e.createNAD("default", name, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"timedmv","master":%q,"mode":"bridge",
	  "ipam":{"type":"host-local","dataDir":%q,"subnet":"%s.0/24","rangeStart":"%s.200","rangeEnd":"%s.216"}}`,
		name, master, e.ipamDir, subnet, subnet, subnet), nil)
}

// delegateSpans reads the wrapper's log: command -> interface -> [start, end].
func delegateSpans(t *testing.T, logFile string) map[string]map[string][2]int64 {
	raw, err := os.ReadFile(logFile)
	must(t, err)
	out := map[string]map[string][2]int64{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 {
			continue
		}
		ts, _ := strconv.ParseInt(f[3], 10, 64)
		if out[f[0]] == nil {
			out[f[0]] = map[string][2]int64{}
		}
		span := out[f[0]][f[1]]
		if f[2] == "start" {
			span[0] = ts
		} else {
			span[1] = ts
		}
		out[f[0]][f[1]] = span
	}
	return out
}

// overlapAll reports whether every span of ifaces runs at one same instant.
func overlapAll(spans map[string][2]int64, ifaces ...string) bool {
	var latestStart, earliestEnd int64
	for i, n := range ifaces {
		s, ok := spans[n]
		if !ok || s[0] == 0 || s[1] == 0 {
			return false
		}
		if i == 0 || s[0] > latestStart {
			latestStart = s[0]
		}
		if i == 0 || s[1] < earliestEnd {
			earliestEnd = s[1]
		}
	}
	return latestStart < earliestEnd
}

// With parallelAttach the secondary networks of a pod are added (and
// deleted) at the same time, after the cluster network; the result and
// network-status stay in annotation order.
func TestParallelAttach(t *testing.T) {
	e, logFile := parallelEnv(t)
	for i, n := range []string{"par-a", "par-b", "par-c"} {
		e.timedNAD(n, fmt.Sprintf("192.168.%d", 41+i), e.master)
	}
	p := e.newPod("default", "parallel", map[string]string{selection.NetworksAnnotation: "par-c,par-a,par-b"})
	ctx := context.Background()
	res, err := e.rt.Add(ctx, p)
	must(t, err)
	spans := delegateSpans(t, logFile)
	if !overlapAll(spans["ADD"], "net1", "net2", "net3") {
		t.Errorf("the three ADDs did not overlap: %v", spans["ADD"])
	}
	if r := fmt.Sprint(res); !strings.Contains(r, "10.250.") {
		t.Errorf("the runtime's result is not the cluster network's: %s", r)
	}
	links, err := podLinks(t, p)
	must(t, err)
	for ifName, subnet := range map[string]string{"net1": "192.168.43.", "net2": "192.168.41.", "net3": "192.168.42."} {
		if l := links[ifName]; len(l.Addrs) != 1 || !strings.HasPrefix(l.Addrs[0], subnet) {
			t.Errorf("%s = %+v, want an address in %s0/24 (annotation order)", ifName, l, subnet)
		}
	}
	var got []string
	for _, s := range networkStatus(t, p) {
		got = append(got, s.Name+"@"+s.Interface)
	}
	if want := "cluster-" + itoa(e.n) + "@eth0 default/par-c@net1 default/par-a@net2 default/par-b@net3"; strings.Join(got, " ") != want {
		t.Errorf("network-status order = %v, want %s", got, want)
	}
	must(t, e.rt.Del(ctx, p))
	spans = delegateSpans(t, logFile)
	if !overlapAll(spans["DEL"], "net1", "net2", "net3") {
		t.Errorf("the three DELs did not overlap: %v", spans["DEL"])
	}
	e.assertNoLeaks()
}

// A failing network among parallel ones: the networks added at the same
// time are deleted again, nothing is left, and the error names the one
// that failed.
func TestParallelAttachFailureRollsBack(t *testing.T) {
	e, logFile := parallelEnv(t)
	e.timedNAD("pok-a", "192.168.44", e.master)
	e.timedNAD("pbroken", "192.168.45", "nosuchdev0")
	e.timedNAD("pok-b", "192.168.46", e.master)
	p := e.newPod("default", "parallel-fail", map[string]string{selection.NetworksAnnotation: "pok-a,pbroken,pok-b"})
	_, err := e.rt.Add(context.Background(), p)
	if err == nil {
		t.Fatal("ADD succeeded")
	}
	if te := cniError(t, err); !strings.Contains(te.Msg, "network default/pbroken (interface net2)") {
		t.Errorf("error should name the failing network: %q", te.Msg)
	}
	spans := delegateSpans(t, logFile)
	if !overlapAll(spans["ADD"], "net1", "net2", "net3") {
		t.Errorf("the three ADDs did not overlap: %v", spans["ADD"])
	}
	for _, ifName := range []string{"net1", "net2", "net3"} {
		if _, ok := spans["DEL"][ifName]; !ok {
			t.Errorf("%s was not deleted by the rollback: %v", ifName, spans["DEL"])
		}
	}
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces left after a failed ADD: %v", keys(links))
	}
	waitEvent(t, p, "NetworkAddFailed")
	e.assertNoLeaks()
	must(t, e.rt.Del(context.Background(), p))
	e.assertNoLeaks()
}

// A crash or a failure at a step of a parallel ADD or DEL (two secondaries
// running at once): after a restart and the runtime's DEL nothing is left.
func TestFaultsDuringParallelAttach(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "parallelAttach: true\n"})
	e.createNAD("default", "pmv1", e.macvlanConf("pmv1", "192.168.47"), nil)
	e.createNAD("default", "pmv2", e.macvlanConf("pmv2", "192.168.48"), nil)
	ann := map[string]string{selection.NetworksAnnotation: "pmv1,pmv2"}
	ctx := context.Background()
	for _, step := range []string{"add:before:net2", "add:after:net1", "add:after:net2", "add:completing"} {
		for _, action := range actions {
			t.Run(step+"="+action, func(t *testing.T) {
				p := e.newPod("default", strings.NewReplacer(":", "-").Replace("pa-"+step+"-"+action), ann)
				e.restart(t, step+"="+action)
				if _, err := e.rt.Add(ctx, p); err == nil {
					t.Fatal("ADD succeeded despite the fault")
				}
				e.restart(t, "")
				must(t, e.rt.Del(ctx, p))
				e.assertNoLeaks()
			})
		}
	}
	for _, step := range []string{"del:before:net1", "del:after:net2"} {
		for _, action := range actions {
			t.Run(step+"="+action, func(t *testing.T) {
				p := e.newPod("default", strings.NewReplacer(":", "-").Replace("pd-"+step+"-"+action), ann)
				e.restart(t, "")
				_, err := e.rt.Add(ctx, p)
				must(t, err)
				e.restart(t, step+"="+action)
				if err := e.rt.Del(ctx, p); err == nil {
					t.Fatal("DEL reported success despite the fault")
				}
				e.restart(t, "")
				must(t, e.rt.Del(ctx, p))
				e.assertNoLeaks()
			})
		}
	}
}
