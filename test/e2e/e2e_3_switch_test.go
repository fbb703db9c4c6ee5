package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/test/harness"
)

// ptpNAD is network B of the live switch on the real node: ptp with its own
// host-local store on the node's pod subnet, accepting requested IPs.
const ptpNAD = `apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: e2e-ptp
  namespace: default
spec:
  config: '{"cniVersion":"1.0.0","name":"e2e-ptp","plugins":[{"type":"ptp","ipMasq":false,"capabilities":{"ips":true},"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}'
`

// kubectlRewire runs the kubectl plugin built by make (bin/kubectl-rewire).
func kubectlRewire(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(repoRoot, "bin", "kubectl-rewire"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl rewire %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// onPrimary waits until the pod's network-status shows network as its
// primary, then checks that the pod has one eth0 holding ip and that the
// kubelet's pod IP is still ip.
func onPrimary(t testing.TB, pod, network, ip string) {
	t.Helper()
	eventually(t, 30*time.Second, pod+" on "+network, func() error {
		p, err := getPod("default", pod)
		if err != nil {
			return err
		}
		st, err := networkStatus(p)
		if err != nil {
			return err
		}
		if len(st) != 1 || st[0].Name != network || st[0].Interface != "eth0" || !st[0].Default || len(st[0].IPs) != 1 || st[0].IPs[0] != ip {
			return fmt.Errorf("network-status %+v", st)
		}
		if p.Status.PodIP != ip {
			return fmt.Errorf("status.podIP %s", p.Status.PodIP)
		}
		return nil
	})
	if addrs := podAddrs(t, "default", pod); len(addrs) != 2 || !slices.Equal(addrs["eth0"], []string{ip}) {
		t.Fatalf("%s: addresses %v, want lo and eth0 with %s", pod, addrs, ip)
	}
}

// A running pod of the real node moves from the bridge primary to ptp and
// back with kubectl rewire switch, keeping its IP while the host pings it
// at 1 kHz.
func TestLiveSwitch(t *testing.T) {
	mustKubectl(t, ptpNAD, "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "e2e-ptp", "--ignore-not-found") })
	createPod(t, "default", "swpod", nil)
	ip := waitRunning(t, "default", "swpod", 60*time.Second).Status.PodIP
	ping, err := harness.StartPinger(ip, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	out := kubectlRewire(t, "switch", "swpod", "--to", "e2e-ptp", "--timeout", "60s")
	t.Logf("%s", strings.TrimSpace(out))
	onPrimary(t, "swpod", "default/e2e-ptp", ip)
	// The node's record and the pod's interfaces agree with network-status.
	if out := kubectlRewire(t, "status", "swpod"); !strings.Contains(out, "record and interfaces match") ||
		!regexp.MustCompile(`(?m)^eth0\s+default/e2e-ptp\s+`+regexp.QuoteMeta(ip)+`\s+\S+\s+true$`).MatchString(out) {
		t.Fatalf("kubectl rewire status after the switch:\n%s", out)
	}
	if !slices.Contains(hostLocalIPs("e2e-ptp"), ip) || slices.Contains(hostLocalIPs("e2e-bridge"), ip) {
		t.Fatalf("after the switch host-local of e2e-ptp holds %v, of e2e-bridge %v", hostLocalIPs("e2e-ptp"), hostLocalIPs("e2e-bridge"))
	}
	out = kubectlRewire(t, "switch", "swpod", "--to", "cluster", "--timeout", "60s")
	t.Logf("%s", strings.TrimSpace(out))
	onPrimary(t, "swpod", "e2e-bridge", ip)
	st := ping.Stop()
	t.Logf("1 kHz ping from the host over both switches: %s", st)
	if st.Received == 0 {
		t.Fatal("no ping reply at all")
	}
	deletePods(t, "default", "swpod")
	assertReleased(t, "e2e-ptp", "e2e-bridge")
}

// A NetworkMigration moves real pods from the bridge primary to ptp and
// rolls them back, with a 100 Hz ping to each from the host.
func TestMigrationRealPods(t *testing.T) {
	mustKubectl(t, ptpNAD, "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "e2e-ptp", "--ignore-not-found") })
	pods := []string{"migpod-0", "migpod-1", "migpod-2"}
	ips := map[string]string{}
	pings := map[string]*harness.Pinger{}
	for _, p := range pods {
		createPod(t, "default", p, nil)
	}
	for _, p := range pods {
		ips[p] = waitRunning(t, "default", p, 60*time.Second).Status.PodIP
		var err error
		if pings[p], err = harness.StartPinger(ips[p], 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { kubectl("", "delete", "networkmigration", "e2e-mig", "--ignore-not-found") })
	kubectlRewire(t, "migrate", "create", "e2e-mig", "--from", "cluster", "--to", "e2e-ptp", "-l", "e2e=true", "--max-per-node", "2")
	out := kubectlRewire(t, "migrate", "status", "e2e-mig", "-w", "--timeout", "120s")
	t.Logf("migration:\n%s", out)
	if !strings.Contains(out, "3/3 done: 3 switched, 0 failed, 0 skipped, 0 remaining (Complete)") {
		t.Fatalf("migration did not complete cleanly:\n%s", out)
	}
	for _, p := range pods {
		onPrimary(t, p, "default/e2e-ptp", ips[p])
	}
	kubectlRewire(t, "migrate", "rollback", "e2e-mig")
	out = kubectlRewire(t, "migrate", "status", "e2e-mig", "-w", "--timeout", "120s")
	if !strings.Contains(out, "3/3 done: 3 switched, 0 failed, 0 skipped, 0 remaining (RolledBack)") {
		t.Fatalf("rollback did not complete cleanly:\n%s", out)
	}
	for _, p := range pods {
		onPrimary(t, p, "e2e-bridge", ips[p])
		t.Logf("%s: 100 Hz ping from the host over the migration and the rollback: %s", p, pings[p].Stop())
	}
	deletePods(t, "default", pods...)
	assertReleased(t, "e2e-ptp", "e2e-bridge")
}

// The installed node passes kubectl rewire doctor.
func TestDoctor(t *testing.T) {
	var out []byte
	eventually(t, 90*time.Second, "a healthy doctor report", func() error {
		var err error
		out, err = exec.Command(filepath.Join(repoRoot, "bin", "kubectl-rewire"), "doctor").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
	t.Logf("%s", out)
	for _, want := range []string{"ok    cluster network", "ok    cni config first", "ok    plugin binaries", "ok    store"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doctor does not say %q", want)
		}
	}
}

// Rolling the DaemonSet to a new image while pods run: the pods keep their
// networks and stay deletable, and the new rewired takes over.
func TestUpgrade(t *testing.T) {
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "up-net", "192.168.41", 10, 20), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "up-net", "--ignore-not-found") })
	pods := []string{"uppod-0", "uppod-1"}
	for _, p := range pods {
		createPod(t, "default", p, map[string]string{networksAnn: "up-net"})
	}
	net1 := map[string]string{}
	var ping *harness.Pinger
	for _, p := range pods {
		ip := waitRunning(t, "default", p, 60*time.Second).Status.PodIP
		net1[p] = podAddrs(t, "default", p)["net1"][0]
		if ping == nil {
			var err error
			if ping, err = harness.StartPinger(ip, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := rewiredPod(t)
	mustKubectl(t, "", "-n", "kube-system", "set", "image", "daemonset/rewire", "rewired=rewire:next", "install=rewire:next")
	t.Cleanup(func() {
		kubectl("", "-n", "kube-system", "set", "image", "daemonset/rewire", "rewired=rewire:dev", "install=rewire:dev")
		kubectl("", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	})
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	if now := rewiredPod(t); now == old {
		t.Fatalf("rewired pod %s was not replaced", now)
	}
	eventually(t, 60*time.Second, "the new version reporting", func() error {
		out, _ := exec.Command(filepath.Join(repoRoot, "bin", "kubectl-rewire"), "doctor").CombinedOutput()
		if !strings.Contains(string(out), " next-") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	execPod(t, "default", pods[0], "ping", "-c", "2", "-W", "2", "-I", "net1", net1[pods[1]])
	execPod(t, "default", pods[1], "ping", "-c", "2", "-W", "2", "-I", "net1", net1[pods[0]])
	t.Logf("100 Hz ping from the host to %s across the upgrade: %s", pods[0], ping.Stop())
	deletePods(t, "default", pods...)
	assertReleased(t, "up-net", "e2e-bridge")
}
