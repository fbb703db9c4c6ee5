package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/test/harness"
)

// Last: Rewire installed with the real helm from charts/rewire (in place of
// deploy/, which the scenarios before used and which is put back after),
// a multi-homed pod, `helm upgrade` to another image while it runs (it keeps
// its interfaces and addresses and still answers), `helm uninstall`.

// helmRelease is the chart's release; in kube-system, named rewire, it
// makes the same objects as deploy/ (test/chart checks the rendering).
const helmRelease = "rewire"

func helm(t testing.TB, args ...string) string {
	t.Helper()
	bin := "helm"
	if d := os.Getenv("REWIRE_TOOLS_DIR"); d != "" {
		bin = filepath.Join(d, "helm")
	}
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("helm not found (%v): hack/build-tools.sh builds it into the tools dir", err)
	}
	start := time.Now()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	t.Logf("helm %s (%.1f s)", strings.Join(args, " "), time.Since(start).Seconds())
	return out.String()
}

// chartObjects are the objects the chart makes with its default values
// (the CRDs, from its crds/ dir, are not the release's: helm leaves them).
var chartObjects = [][2]string{
	{"-n kube-system", "daemonset/rewire"},
	{"-n kube-system", "configmap/rewire-config"},
	{"-n kube-system", "serviceaccount/rewire"},
	{"", "clusterrole/rewire"},
	{"", "clusterrolebinding/rewire"},
	{"", "validatingadmissionpolicy/rewire-own-node-pods"},
	{"", "validatingadmissionpolicybinding/rewire-own-node-pods"},
}

func objectArgs(ns, obj string, more ...string) []string {
	return append(append(strings.Fields(ns), "get", obj), more...)
}

// waitRewiredGone waits until no rewired pod is left.
func waitRewiredGone(t testing.TB) {
	t.Helper()
	eventually(t, 90*time.Second, "rewired pods gone", func() error {
		out, err := kubectl("", "-n", "kube-system", "get", "pods", "-l", "app=rewire", "-o", "name")
		if err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
}

// podState is what a pod's networks look like from inside and in its
// network-status: it must not change across an upgrade of Rewire.
type podState struct {
	addrs  map[string][]string
	macs   map[string]string
	status []netStatus
}

func podNetState(t testing.TB, name string) podState {
	t.Helper()
	s := podState{addrs: podAddrs(t, "default", name), macs: map[string]string{}}
	for ifn := range s.addrs {
		if ifn != "lo" {
			s.macs[ifn] = podMAC(t, "default", name, ifn)
		}
	}
	p, err := getPod("default", name)
	if err != nil {
		t.Fatal(err)
	}
	if s.status, err = networkStatus(p); err != nil {
		t.Fatal(err)
	}
	return s
}

func sameState(a, b podState) bool {
	return maps.EqualFunc(a.addrs, b.addrs, slices.Equal) && maps.Equal(a.macs, b.macs) &&
		slices.EqualFunc(a.status, b.status, func(x, y netStatus) bool {
			return x.Name == y.Name && x.Interface == y.Interface && slices.Equal(x.IPs, y.IPs) && x.Mac == y.Mac && x.Default == y.Default
		})
}

func TestHelmInstallUpgradeUninstall(t *testing.T) {
	// deploy/ (the scenarios before) makes the same objects without helm's
	// ownership: helm refuses to adopt them, so it goes first (with its
	// CRDs: the chart installs them again), and comes back at the end.
	if _, err := kubectl("", "-n", "kube-system", "get", "daemonset", "rewire"); err == nil {
		mustKubectl(t, "", "delete", "-k", repoRoot+"/deploy", "--wait=true", "--timeout=120s")
		waitRewiredGone(t)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("helm status: %s", helmQuiet("status", helmRelease, "-n", "kube-system"))
			}
			helmQuiet("uninstall", helmRelease, "-n", "kube-system", "--ignore-not-found")
			mustKubectl(t, "", "apply", "-k", repoRoot+"/deploy")
			mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
		})
	}

	// Install: rewire:dev (imported into the node's containerd), the chart's
	// defaults otherwise, as deploy/.
	start := time.Now()
	t.Log(helm(t, "install", helmRelease, repoRoot+"/charts/rewire", "-n", "kube-system", "--set", "image.tag=dev", "--wait", "--timeout", "120s"))
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	t.Logf("rewire DaemonSet Ready %.1f s after helm install", time.Since(start).Seconds())
	for _, o := range chartObjects {
		out := mustKubectl(t, "", objectArgs(o[0], o[1], "-o", `jsonpath={.metadata.annotations.meta\.helm\.sh/release-name}`)...)
		if out != helmRelease {
			t.Errorf("%s: release-name annotation %q, want %q", o[1], out, helmRelease)
		}
	}
	for _, crd := range []string{"network-attachment-definitions.k8s.cni.cncf.io", "networkmigrations.rewire.io"} {
		mustKubectl(t, "", "wait", "--for=condition=Established", "crd/"+crd, "--timeout=30s")
	}

	// A multi-homed pod pair (eth0 on the bridge, net1 macvlan).
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "helm-net", "192.168.51", 10, 20), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "helm-net", "--ignore-not-found") })
	pods := []string{"helm-0", "helm-1"}
	t.Cleanup(func() {
		kubectl("", "delete", "pod", "helm-0", "helm-1", "helm-2", "--ignore-not-found", "--wait=true", "--timeout=90s")
	})
	for _, p := range pods {
		createPod(t, "default", p, map[string]string{networksAnn: "helm-net"})
	}
	before := map[string]podState{}
	for _, p := range pods {
		waitRunning(t, "default", p, 60*time.Second)
		waitStatus(t, "default", p, 2)
		before[p] = podNetState(t, p)
		if a := before[p].addrs; len(a["net1"]) != 1 || !strings.HasPrefix(a["net1"][0], "192.168.51.") || len(a["eth0"]) != 1 || !inPodCIDR(a["eth0"][0]) {
			t.Fatalf("%s: addresses %v, want eth0 in 10.244.0.0/24 and net1 in 192.168.51.10-20", p, a)
		}
	}
	net1 := func(p string) string { return before[p].addrs["net1"][0] }
	execPod(t, "default", pods[0], "ping", "-c", "2", "-W", "2", "-I", "net1", net1(pods[1]))
	ping, err := harness.StartPinger(before[pods[0]].addrs["eth0"][0], 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}

	// Upgrade to another image (rewire:next, the same code built as another
	// version): the DaemonSet rolls, the pods keep their networks.
	old := rewiredPod(t)
	start = time.Now()
	t.Log(helm(t, "upgrade", helmRelease, repoRoot+"/charts/rewire", "-n", "kube-system", "--set", "image.tag=next", "--wait", "--timeout", "120s"))
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	t.Logf("rewire DaemonSet rolled %.1f s after helm upgrade", time.Since(start).Seconds())
	if now := rewiredPod(t); now == old {
		t.Fatalf("rewired pod %s was not replaced", now)
	}
	if img := mustKubectl(t, "", "-n", "kube-system", "get", "daemonset", "rewire", "-o", "jsonpath={.spec.template.spec.containers[0].image}"); img != "rewire:next" {
		t.Errorf("DaemonSet image %s after the upgrade", img)
	}
	eventually(t, 60*time.Second, "the new version reporting", func() error {
		out, _ := exec.Command(filepath.Join(repoRoot, "bin", "kubectl-rewire"), "doctor").CombinedOutput()
		if !strings.Contains(string(out), " next-") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	var hist []struct {
		Revision int    `json:"revision"`
		Status   string `json:"status"`
	}
	h := helm(t, "history", helmRelease, "-n", "kube-system", "-o", "json")
	if err := json.Unmarshal([]byte(h), &hist); err != nil || len(hist) != 2 || hist[1].Revision != 2 || hist[1].Status != "deployed" {
		t.Errorf("helm history (%v): %s", err, h)
	}
	for _, p := range pods {
		if after := podNetState(t, p); !sameState(before[p], after) {
			t.Errorf("%s changed across the upgrade:\nbefore %+v\nafter  %+v", p, before[p], after)
		}
	}
	execPod(t, "default", pods[0], "ping", "-c", "2", "-W", "2", "-I", "net1", net1(pods[1]))
	execPod(t, "default", pods[1], "ping", "-c", "2", "-W", "2", "-I", "net1", net1(pods[0]))
	execPod(t, "default", pods[1], "ping", "-c", "1", "-W", "2", before[pods[0]].addrs["eth0"][0])
	st := ping.Stop()
	t.Logf("100 Hz ping from the host to %s (eth0) across the upgrade: %s", pods[0], st)
	if st.Received == 0 {
		t.Errorf("%s answered no ping across the upgrade: %s", pods[0], st)
	}
	// The new rewired wires a new pod, which reaches the old ones.
	createPod(t, "default", "helm-2", map[string]string{networksAnn: "helm-net"})
	waitRunning(t, "default", "helm-2", 60*time.Second)
	if a := podAddrs(t, "default", "helm-2"); len(a["net1"]) != 1 || slices.Contains([]string{net1(pods[0]), net1(pods[1])}, a["net1"][0]) {
		t.Fatalf("helm-2: net1 %v (the others have %s, %s)", a["net1"], net1(pods[0]), net1(pods[1]))
	}
	execPod(t, "default", "helm-2", "ping", "-c", "2", "-W", "2", "-I", "net1", net1(pods[0]))
	deletePods(t, "default", append(pods, "helm-2")...)
	assertReleased(t, "helm-net", "e2e-bridge")

	// Uninstall: the release's objects go; the CRDs (and the NADs) stay, as
	// helm does for a chart's crds/.
	helm(t, "uninstall", helmRelease, "-n", "kube-system", "--wait", "--timeout", "120s")
	waitRewiredGone(t)
	for _, o := range chartObjects {
		if out, err := kubectl("", objectArgs(o[0], o[1], "--ignore-not-found", "-o", "name")...); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("%s left after helm uninstall: %q %v", o[1], out, err)
		}
	}
	if out := helm(t, "list", "-n", "kube-system", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("helm list after uninstall: %q", out)
	}
	mustKubectl(t, "", "get", "crd", "network-attachment-definitions.k8s.cni.cncf.io", "networkmigrations.rewire.io")
	mustKubectl(t, "", "get", "net-attach-def", "helm-net")
}

// helmQuiet runs helm for a cleanup: errors are returned in the output.
func helmQuiet(args ...string) string {
	bin := "helm"
	if d := os.Getenv("REWIRE_TOOLS_DIR"); d != "" {
		bin = filepath.Join(d, "helm")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%v: %s", err, out)
	}
	return string(out)
}
