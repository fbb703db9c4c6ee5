package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The scenarios run in this order (go test runs a file's tests in order):
// install first, uninstall last.

// hostLinks is the set of the host's link names.
func hostLinks(t testing.TB) map[string]bool {
	t.Helper()
	out := hostCmd(t, "ip", "-o", "link", "show")
	links := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.SplitN(l, ": ", 3)
		if len(f) >= 2 {
			links[strings.SplitN(f[1], "@", 2)[0]] = true
		}
	}
	return links
}

// podLinksOnHost are the host ends of pod veths (the bridge's ports).
func bridgePorts(t testing.TB) []string {
	t.Helper()
	out, _ := exec.Command("ip", "-o", "link", "show", "master", "rewire-e2e0").CombinedOutput()
	var ports []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.SplitN(l, ": ", 3); len(f) >= 2 {
			ports = append(ports, strings.SplitN(f[1], "@", 2)[0])
		}
	}
	return ports
}

// assertReleased checks that nothing of the suite's pods is left on the node:
// no host-local address of the given networks, no Rewire record, no bridge port.
func assertReleased(t testing.TB, networks ...string) {
	t.Helper()
	eventually(t, 30*time.Second, "everything released", func() error {
		for _, n := range networks {
			if ips := hostLocalIPs(n); len(ips) > 0 {
				return fmt.Errorf("host-local still holds %v for %s", ips, n)
			}
		}
		if r := records(); len(r) > 0 {
			return fmt.Errorf("rewire records left: %v", r)
		}
		if p := bridgePorts(t); len(p) > 0 {
			return fmt.Errorf("bridge ports left: %v", p)
		}
		return nil
	})
}

func checkPrimaryOnly(t *testing.T, ns, name string) {
	t.Helper()
	addrs := podAddrs(t, ns, name)
	if len(addrs) != 2 || len(addrs["eth0"]) != 1 || !inPodCIDR(addrs["eth0"][0]) {
		t.Fatalf("pod %s addresses = %v, want lo and eth0 in 10.244.0.0/24", name, addrs)
	}
	execPod(t, ns, name, "ping", "-c", "1", "-W", "2", "10.244.0.1")
}

func TestInstallRewire(t *testing.T) {
	// Before Rewire, the runtime uses the bridge primary directly.
	createPod(t, "default", "before-rewire", nil)
	waitRunning(t, "default", "before-rewire", 60*time.Second)
	checkPrimaryOnly(t, "default", "before-rewire")
	deletePods(t, "default", "before-rewire")

	start := time.Now()
	mustKubectl(t, "", "apply", "-k", repoRoot+"/deploy")
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	t.Logf("rewire DaemonSet Ready %.1f s after kubectl apply -k deploy/", time.Since(start).Seconds())
	out := mustKubectl(t, "", "-n", "kube-system", "get", "pods", "-l", "app=rewire",
		"-o", "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}")
	lines := strings.Fields(out)
	if len(lines) != 2 || lines[1] != "True" {
		t.Fatalf("rewire pods: %q", out)
	}
}

func TestPlainPodOnPrimary(t *testing.T) {
	createPod(t, "default", "plain", nil)
	p := waitRunning(t, "default", "plain", 60*time.Second)
	checkPrimaryOnly(t, "default", "plain")
	st, err := networkStatus(p)
	if err != nil {
		// network-status is written off the CNI path: give it a moment.
		eventually(t, 10*time.Second, "network-status", func() error {
			p, err = getPod("default", "plain")
			if err == nil {
				st, err = networkStatus(p)
			}
			return err
		})
	}
	if len(st) != 1 || st[0].Interface != "eth0" || !st[0].Default || len(st[0].IPs) != 1 || st[0].IPs[0] != p.Status.PodIP {
		t.Errorf("network-status = %+v, pod IP %s", st, p.Status.PodIP)
	}
	deletePods(t, "default", "plain")
	assertReleased(t, "e2e-bridge")
}

// waitStatus waits for a network-status with n entries.
func waitStatus(t testing.TB, ns, name string, n int) []netStatus {
	t.Helper()
	var st []netStatus
	eventually(t, 20*time.Second, "network-status of "+name, func() error {
		p, err := getPod(ns, name)
		if err != nil {
			return err
		}
		if st, err = networkStatus(p); err != nil {
			return err
		}
		if len(st) != n {
			return fmt.Errorf("%d entries: %+v", len(st), st)
		}
		return nil
	})
	return st
}

func podMAC(t testing.TB, ns, name, ifname string) string {
	t.Helper()
	out := execPod(t, ns, name, "cat", "/sys/class/net/"+ifname+"/address")
	return strings.TrimSpace(out)
}

func TestMacvlanSeed(t *testing.T) {
	macvlanMaster(t)
	linksBefore := hostLinks(t)
	mustKubectl(t, macvlanNAD("default", "macvlan-conf", "192.168.1", 200, 216), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "macvlan-conf", "--ignore-not-found") })
	ann := map[string]string{networksAnn: "macvlan-conf"}
	createPod(t, "default", "samplepod", ann)
	createPod(t, "default", "samplepod2", ann)
	ips := map[string]string{}
	for _, name := range []string{"samplepod", "samplepod2"} {
		waitRunning(t, "default", name, 60*time.Second)
		out := execPod(t, "default", name, "ip", "a")
		if !strings.Contains(out, " eth0") || !strings.Contains(out, " net1") {
			t.Fatalf("%s: ip a has no eth0 and net1:\n%s", name, out)
		}
		addrs := podAddrs(t, "default", name)
		if len(addrs["net1"]) != 1 || !inRange(addrs["net1"][0], 200, 216) {
			t.Fatalf("%s: net1 addresses %v, want one in 192.168.1.200-216", name, addrs["net1"])
		}
		ips[name] = addrs["net1"][0]
		st := waitStatus(t, "default", name, 2)
		p, _ := getPod("default", name)
		if st[0].Interface != "eth0" || !st[0].Default || st[0].IPs[0] != p.Status.PodIP || st[0].Name != "e2e-bridge" {
			t.Errorf("%s: primary status %+v (pod IP %s)", name, st[0], p.Status.PodIP)
		}
		if st[1].Name != "default/macvlan-conf" || st[1].Interface != "net1" || st[1].Default ||
			len(st[1].IPs) != 1 || st[1].IPs[0] != ips[name] || st[1].Mac != podMAC(t, "default", name, "net1") {
			t.Errorf("%s: macvlan status %+v, net1 has %s %s", name, st[1], ips[name], podMAC(t, "default", name, "net1"))
		}
	}
	if ips["samplepod"] == ips["samplepod2"] {
		t.Fatalf("both pods got %s", ips["samplepod"])
	}
	// The two pods reach each other over net1 (macvlan bridge mode on one master).
	execPod(t, "default", "samplepod", "ping", "-c", "2", "-W", "2", "-I", "net1", ips["samplepod2"])
	execPod(t, "default", "samplepod2", "ping", "-c", "2", "-W", "2", "-I", "net1", ips["samplepod"])
	if got := hostLocalIPs("macvlan-conf"); len(got) != 2 {
		t.Errorf("host-local holds %v, want the two pods' addresses", got)
	}

	deletePods(t, "default", "samplepod", "samplepod2")
	assertReleased(t, "macvlan-conf", "e2e-bridge")
	after := hostLinks(t)
	for l := range after {
		if !linksBefore[l] && !strings.HasPrefix(l, "veth") {
			t.Errorf("link %s left on the host", l)
		}
	}
}

func TestThreeNetworks(t *testing.T) {
	macvlanMaster(t)
	for i, n := range []string{"net-a", "net-b", "net-c"} {
		mustKubectl(t, macvlanNAD("default", n, fmt.Sprintf("192.168.%d", 11+i), 10, 20), "apply", "-f", "-")
	}
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "net-a", "net-b", "net-c", "--ignore-not-found") })
	createPod(t, "default", "three", map[string]string{networksAnn: "net-a,net-b,net-c"})
	waitRunning(t, "default", "three", 60*time.Second)
	addrs := podAddrs(t, "default", "three")
	for i, ifn := range []string{"net1", "net2", "net3"} {
		want := fmt.Sprintf("192.168.%d.", 11+i)
		if len(addrs[ifn]) != 1 || !strings.HasPrefix(addrs[ifn][0], want) {
			t.Errorf("%s = %v, want an address in %s0/24 (all: %v)", ifn, addrs[ifn], want, addrs)
		}
	}
	st := waitStatus(t, "default", "three", 4)
	for i, n := range []string{"default/net-a", "default/net-b", "default/net-c"} {
		if st[i+1].Name != n || st[i+1].Interface != fmt.Sprintf("net%d", i+1) {
			t.Errorf("status[%d] = %+v", i+1, st[i+1])
		}
	}
	deletePods(t, "default", "three")
	assertReleased(t, "net-a", "net-b", "net-c", "e2e-bridge")
}

func TestForbiddenNamespace(t *testing.T) {
	macvlanMaster(t)
	for _, ns := range []string{"e2e-a", "e2e-b"} {
		mustKubectl(t, "", "create", "namespace", ns)
		t.Cleanup(func() { kubectl("", "delete", "namespace", ns, "--wait=false") })
	}
	eventually(t, 30*time.Second, "default ServiceAccount in e2e-a", func() error {
		_, err := kubectl("", "-n", "e2e-a", "get", "serviceaccount", "default")
		return err
	})
	mustKubectl(t, macvlanNAD("e2e-b", "private", "192.168.21", 10, 20), "apply", "-f", "-")
	createPod(t, "e2e-a", "intruder", map[string]string{networksAnn: "e2e-b/private"})
	var ev string
	eventually(t, 60*time.Second, "a NetworkAddFailed event naming the namespace", func() error {
		ev = podEvents("e2e-a", "intruder")
		if strings.Contains(ev, "NetworkAddFailed") && strings.Contains(ev, "e2e-b") {
			return nil
		}
		return fmt.Errorf("events: %s", ev)
	})
	t.Logf("events:\n%s", ev)
	if p, err := getPod("e2e-a", "intruder"); err != nil || p.Status.Phase == "Running" {
		t.Errorf("intruder pod phase %v (%v), want not running", p.Status.Phase, err)
	}
	deletePods(t, "e2e-a", "intruder")
	assertReleased(t, "private", "e2e-bridge")
}

func TestHotplug(t *testing.T) {
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "hot-net", "192.168.31", 10, 20), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "hot-net", "--ignore-not-found") })
	createPod(t, "default", "hotpod", nil)
	waitRunning(t, "default", "hotpod", 60*time.Second)
	checkPrimaryOnly(t, "default", "hotpod")

	start := time.Now()
	mustKubectl(t, "", "annotate", "pod", "hotpod", "--overwrite", networksAnn+"=hot-net")
	eventually(t, 30*time.Second, "net1 plugged", func() error {
		out, err := kubectl("", "exec", "hotpod", "--", "ip", "-o", "-4", "addr", "show", "net1")
		if err != nil || !strings.Contains(out, "192.168.31.") {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	t.Logf("net1 plugged %.2f s after kubectl annotate", time.Since(start).Seconds())
	if st := waitStatus(t, "default", "hotpod", 2); st[1].Name != "default/hot-net" || st[1].Interface != "net1" {
		t.Errorf("status after plug: %+v", st)
	}
	mustKubectl(t, "", "annotate", "pod", "hotpod", networksAnn+"-")
	eventually(t, 30*time.Second, "net1 unplugged", func() error {
		if _, ok := podAddrs(t, "default", "hotpod")["net1"]; ok {
			return fmt.Errorf("net1 still there")
		}
		return nil
	})
	if ips := hostLocalIPs("hot-net"); len(ips) != 0 {
		t.Errorf("host-local still holds %v after unplug", ips)
	}
	deletePods(t, "default", "hotpod")
	assertReleased(t, "hot-net", "e2e-bridge")
}

func rewiredPod(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(mustKubectl(t, "", "-n", "kube-system", "get", "pods", "-l", "app=rewire",
		"--field-selector", "status.phase=Running", "-o", "jsonpath={.items[0].metadata.name}"))
}

// Pods are created and deleted while rewired's pod is deleted (the DaemonSet
// makes a new one): every pod still comes up, and all is released after.
func TestRewiredRestartDuringChurn(t *testing.T) {
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "churn-net", "192.168.41", 10, 60), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "churn-net", "--ignore-not-found") })
	var names []string
	for i := range 8 {
		names = append(names, fmt.Sprintf("churn-%d", i))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, n := range names {
			createPod(t, "default", n, map[string]string{networksAnn: "churn-net"})
			if i == 3 {
				mustKubectl(t, "", "-n", "kube-system", "delete", "pod", "-l", "app=rewire", "--wait=false")
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()
	wg.Wait()
	for _, n := range names {
		waitRunning(t, "default", n, 120*time.Second)
		if a := podAddrs(t, "default", n); len(a["net1"]) != 1 {
			t.Errorf("%s: net1 = %v", n, a["net1"])
		}
	}
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=60s")
	// Pods made before, during and after the restart reach each other over net1.
	first, last := podAddrs(t, "default", names[0])["net1"], podAddrs(t, "default", names[len(names)-1])["net1"]
	if len(first) == 1 && len(last) == 1 {
		execPod(t, "default", names[0], "ping", "-c", "1", "-W", "2", "-I", "net1", last[0])
		execPod(t, "default", names[len(names)-1], "ping", "-c", "1", "-W", "2", "-I", "net1", first[0])
	}
	// Delete half while rewired restarts again.
	mustKubectl(t, "", "-n", "kube-system", "delete", "pod", "-l", "app=rewire", "--wait=false")
	deletePods(t, "default", names[:4]...)
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=60s")
	deletePods(t, "default", names[4:]...)
	assertReleased(t, "churn-net", "e2e-bridge")
}

// rewired is killed (SIGKILL, the kubelet restarts the container) while pods
// with a secondary network are being created: every pod still comes up, the
// pods reach each other, and everything is released after.
func TestRewiredKilledDuringAdds(t *testing.T) {
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "kill-net", "192.168.42", 10, 60), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "kill-net", "--ignore-not-found") })
	before := rewiredRestarts(t)
	// The container's first process: the whole container ends, its
	// delegates with it (TestDelegateOutlivesKilledRewired kills only the
	// daemon).
	pid := parent(rewiredPID(t))
	if !isRewired(pid) {
		t.Fatalf("the serving rewired's parent (pid %d) is not rewired: no supervisor", pid)
	}
	var names []string
	for i := range 6 {
		names = append(names, fmt.Sprintf("killed-%d", i))
	}
	for i, n := range names {
		createPod(t, "default", n, map[string]string{networksAnn: "kill-net"})
		if i == 1 {
			hostCmd(t, "kill", "-KILL", fmt.Sprint(pid))
		}
	}
	for _, n := range names {
		waitRunning(t, "default", n, 120*time.Second)
	}
	if after := rewiredRestarts(t); after == before {
		t.Errorf("rewired restartCount still %s after SIGKILL", after)
	}
	first, last := podAddrs(t, "default", names[0])["net1"], podAddrs(t, "default", names[len(names)-1])["net1"]
	if len(first) != 1 || len(last) != 1 {
		t.Fatalf("net1: %v %v", first, last)
	}
	execPod(t, "default", names[0], "ping", "-c", "1", "-W", "2", "-I", "net1", last[0])
	if got := hostLocalIPs("kill-net"); len(got) != len(names) {
		t.Errorf("host-local holds %v for %d pods (a leak or a lost address)", got, len(names))
	}
	deletePods(t, "default", names...)
	assertReleased(t, "kill-net", "e2e-bridge")
}

// TestDelegateOutlivesKilledRewired SIGKILLs the serving rewired, as the
// OOM killer would pick it, while a delegate of a macvlan + host-local ADD
// is half-way (a wrapper plugin, test/e2e/slowplugin, holds it for a
// second): the delegate finishes instead of dying with rewired, the daemon
// is restarted in place by its container's first process (no container
// restart), the pod comes up on the kubelet's retry, and after its DEL
// nothing is left.
func TestDelegateOutlivesKilledRewired(t *testing.T) {
	macvlanMaster(t)
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", "/opt/cni/bin/slowmacvlan", "./slowplugin").CombinedOutput()
	if err != nil {
		t.Fatalf("building the slow plugin: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = os.Remove("/opt/cni/bin/slowmacvlan"); _ = os.RemoveAll(slowMarks) })
	_ = os.RemoveAll(slowMarks)
	nad := strings.Replace(macvlanNAD("default", "slow-net", "192.168.43", 10, 20), `"type":"macvlan"`, `"type":"slowmacvlan"`, 1)
	mustKubectl(t, nad, "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "slow-net", "--ignore-not-found") })
	before, pid := rewiredRestarts(t), rewiredPID(t)
	createPod(t, "default", "slow", map[string]string{networksAnn: "slow-net"})
	var started []string
	eventually(t, 60*time.Second, "the slow delegate to start", func() error {
		if started, _ = filepath.Glob(filepath.Join(slowMarks, "*.started")); len(started) == 0 {
			return fmt.Errorf("no marker in %s", slowMarks)
		}
		return nil
	})
	hostCmd(t, "kill", "-KILL", fmt.Sprint(pid))
	done := strings.TrimSuffix(started[0], ".started") + ".done"
	eventually(t, 30*time.Second, "the delegate to finish", func() error {
		code, err := os.ReadFile(done)
		if err != nil {
			return err
		}
		if string(code) != "0" {
			t.Errorf("the delegate's macvlan exited %s", code)
		}
		return nil
	})
	waitRunning(t, "default", "slow", 120*time.Second)
	if after := rewiredRestarts(t); after != before {
		t.Errorf("rewired's container restarted (restartCount %s, was %s)", after, before)
	}
	if now := findRewired(); now == pid || now == 0 {
		t.Errorf("serving rewired after the SIGKILL: pid %d, the killed one %d", now, pid)
	}
	logs := mustKubectl(t, "", "-n", "kube-system", "logs", "-l", "app=rewire", "--tail", "-1")
	for _, want := range []string{"restarting it in place", "the delegates a previous rewired left running"} {
		if !strings.Contains(logs, want) {
			t.Errorf("rewired's log lacks %q", want)
		}
	}
	if got := hostLocalIPs("slow-net"); len(got) != 1 {
		t.Errorf("host-local holds %v for one pod", got)
	}
	deletePods(t, "default", "slow")
	assertReleased(t, "slow-net", "e2e-bridge")
}

// slowMarks is test/e2e/slowplugin's marker directory.
const slowMarks = "/var/lib/cni/rewire-e2e-slow"

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
