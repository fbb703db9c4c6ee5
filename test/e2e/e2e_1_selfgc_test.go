package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// e2eRunDir holds the e2e node's containerd socket (hack/node.sh's RUN_DIR),
// not containerd's default /run/containerd.
const e2eRunDir = "/run/rewire-e2e"

// Self-GC on the real node: a pod's sandbox is removed by containerd
// without Rewire ever hearing of it, and rewired releases what Rewire held
// for it by itself. A missed DEL is made for real: while the pod is deleted
// Rewire's CNI config is out of the runtime's conf dir, so containerd runs
// the next config (the bridge primary) for the sandbox's DELs and removes
// the sandbox; the bridge releases eth0, and Rewire's record and the
// macvlan network's host-local address stay behind, as after a runtime that
// lost its state. Once Rewire's config is back, self-GC (ListPodSandbox over
// the CRI) releases them; another pod on the same network is untouched.
func TestSelfGC(t *testing.T) {
	enableSelfGC(t)
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "gc-net", "192.168.71", 10, 20), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "gc-net", "--ignore-not-found") })
	ann := map[string]string{networksAnn: "gc-net"}
	createPod(t, "default", "gc-kept", ann)
	createPod(t, "default", "gc-gone", ann)
	t.Cleanup(func() {
		kubectl("", "-n", "default", "delete", "pod", "gc-kept", "gc-gone", "--ignore-not-found", "--wait=false")
	})
	net1 := map[string]string{}
	for _, name := range []string{"gc-kept", "gc-gone"} {
		waitRunning(t, "default", name, 60*time.Second)
		a := podAddrs(t, "default", name)["net1"]
		if len(a) != 1 {
			t.Fatalf("%s: net1 addresses %v", name, a)
		}
		net1[name] = a[0]
	}
	keptID, goneID := sandboxOf(t, "gc-kept"), sandboxOf(t, "gc-gone")
	if got := hostLocalIPs("gc-net"); len(got) != 2 {
		t.Fatalf("host-local holds %v for gc-net, want the two pods' addresses", got)
	}

	// The sandbox goes with every CNI call of the runtime going past Rewire.
	restore := setRewireConfAside(t)
	deletePods(t, "default", "gc-gone")
	// The kubelet would remove the stopped sandbox at its next container
	// GC (stopping it again first): removed now, while Rewire's config is
	// still out of the way.
	if out, err := crictl("rmp", goneID); err != nil && !strings.Contains(out+err.Error(), "not found") {
		t.Fatalf("crictl rmp %s: %v %s", goneID, err, out)
	}
	eventually(t, 60*time.Second, "the sandbox gone from containerd", func() error {
		out, err := crictl("pods", "-q", "--id", goneID)
		if err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("crictl pods: %q %v", out, err)
		}
		return nil
	})
	restore()

	eventually(t, 90*time.Second, "self-GC releasing the vanished sandbox", func() error {
		if slices.Contains(records(), goneID+".json") {
			return fmt.Errorf("record %s still there", goneID)
		}
		if got := hostLocalIPs("gc-net"); !slices.Equal(got, []string{net1["gc-kept"]}) {
			return fmt.Errorf("host-local holds %v for gc-net, want only %s (gc-kept's)", got, net1["gc-kept"])
		}
		return nil
	})
	// It was self-GC (a DEL reaching Rewire would have left it nothing).
	logs := mustKubectl(t, "", "-n", "kube-system", "logs", rewiredPod(t))
	if !hasLine(logs, "self-GC: released", goneID) {
		t.Errorf("no self-GC release line for %s in rewired's log:\n%s", goneID, lastLines(logs, 20))
	}

	// The pod the runtime still has is untouched and works.
	if !slices.Contains(records(), keptID+".json") {
		t.Errorf("gc-kept's record %s was released", keptID)
	}
	if a := podAddrs(t, "default", "gc-kept")["net1"]; len(a) != 1 || a[0] != net1["gc-kept"] {
		t.Errorf("gc-kept's net1 is %v, was %s", a, net1["gc-kept"])
	}
	checkPrimaryOnlyEth0(t, "default", "gc-kept")
	deletePods(t, "default", "gc-kept")
	assertReleased(t, "gc-net", "e2e-bridge")
}

// enableSelfGC points the DaemonSet's CRI volume at the e2e node's
// containerd (rewired's default criSocket, /run/containerd/containerd.sock
// in its container, is then that containerd's socket) and runs self-GC
// every 2 s with a 10 s grace period; deploy/ is applied again after the
// test.
func enableSelfGC(t *testing.T) {
	t.Helper()
	cfg := mustKubectl(t, "", "-n", "kube-system", "get", "configmap", "rewire-config", "-o", `jsonpath={.data.config\.yaml}`)
	patch, _ := json.Marshal(map[string]any{"data": map[string]string{
		"config.yaml": strings.TrimRight(cfg, "\n") + "\ngcInterval: 2s\ngcGrace: 10s\n"}})
	t.Cleanup(func() {
		mustKubectl(t, "", "apply", "-k", repoRoot+"/deploy")
		mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	})
	mustKubectl(t, "", "-n", "kube-system", "patch", "configmap", "rewire-config", "--type", "merge", "-p", string(patch))
	vols := mustKubectl(t, "", "-n", "kube-system", "get", "daemonset", "rewire", "-o", "jsonpath={.spec.template.spec.volumes[*].name}")
	i := slices.Index(strings.Fields(vols), "cri")
	if i < 0 {
		t.Fatalf("the DaemonSet has no cri volume (volumes: %s)", vols)
	}
	mustKubectl(t, "", "-n", "kube-system", "patch", "daemonset", "rewire", "--type", "json", "-p",
		fmt.Sprintf(`[{"op":"replace","path":"/spec/template/spec/volumes/%d/hostPath/path","value":%q}]`, i, e2eRunDir))
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	eventually(t, 90*time.Second, "self-GC asking containerd", func() error {
		logs, err := kubectl("", "-n", "kube-system", "logs", rewiredPod(t))
		if err != nil || !strings.Contains(logs, "self-GC: the runtime answers") {
			return fmt.Errorf("rewired's log: %v\n%s", err, lastLines(logs, 10))
		}
		return nil
	})
}

// setRewireConfAside moves Rewire's CNI config out of the node's conf dir
// (containerd then uses the bridge primary's config) until restore is
// called or the test ends; each waits until containerd has reloaded.
func setRewireConfAside(t *testing.T) (restore func()) {
	t.Helper()
	conf := "/etc/cni/net.d/00-rewire.conflist"
	aside := "/etc/cni/00-rewire.conflist.selfgc-e2e"
	if err := os.Rename(conf, aside); err != nil {
		t.Fatal(err)
	}
	back := false
	restore = func() {
		if back {
			return
		}
		back = true
		// Written, not renamed back: containerd reloads its CNI config
		// on a write, a rename or a removal, and ignores a file created.
		data, err := os.ReadFile(aside)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conf, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(aside)
		waitCNINetwork(t, "rewire-cni-network")
	}
	t.Cleanup(restore)
	waitCNINetwork(t, "e2e-bridge")
	return restore
}

// waitCNINetwork waits until containerd's CNI config (crictl info) is the
// network named (besides its loopback).
func waitCNINetwork(t *testing.T, name string) {
	t.Helper()
	eventually(t, 30*time.Second, "containerd using CNI network "+name, func() error {
		out, err := crictl("info")
		if err != nil {
			return err
		}
		var info struct {
			CNI struct {
				Networks []struct{ Config struct{ Name string } }
			} `json:"cniconfig"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			return fmt.Errorf("crictl info: %w", err)
		}
		var got []string
		for _, n := range info.CNI.Networks {
			if n.Config.Name != "cni-loopback" {
				got = append(got, n.Config.Name)
			}
		}
		if len(got) == 0 || slices.ContainsFunc(got, func(n string) bool { return n != name }) {
			return fmt.Errorf("containerd's CNI networks: %v", got)
		}
		return nil
	})
}

// crictl runs the node's crictl against its containerd; stdout only.
func crictl(args ...string) (string, error) {
	dir := os.Getenv("E2E_DIR")
	if dir == "" {
		dir = "/var/lib/rewire-e2e"
	}
	nodebin, err := os.ReadFile(filepath.Join(dir, "nodebin"))
	if err != nil {
		return "", fmt.Errorf("the node's binaries (hack/node.sh up writes %s/nodebin): %w", dir, err)
	}
	cmd := exec.Command(filepath.Join(strings.TrimSpace(string(nodebin)), "crictl"),
		append([]string{"-r", "unix://" + e2eRunDir + "/containerd.sock", "-t", "30s"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// sandboxOf is the container ID of Rewire's record of the pod's sandbox.
func sandboxOf(t *testing.T, pod string) string {
	t.Helper()
	for _, f := range records() {
		raw, err := os.ReadFile(filepath.Join("/var/lib/rewire/sandboxes", f))
		if err != nil {
			continue
		}
		var sb struct{ ContainerID, PodNamespace, PodName string }
		if json.Unmarshal(raw, &sb) == nil && sb.PodNamespace == "default" && sb.PodName == pod {
			return sb.ContainerID
		}
	}
	t.Fatalf("no Rewire record of pod default/%s (records: %v)", pod, records())
	return ""
}

// checkPrimaryOnlyEth0 checks that the pod's eth0 has its address and
// reaches the bridge's gateway.
func checkPrimaryOnlyEth0(t *testing.T, ns, name string) {
	t.Helper()
	if a := podAddrs(t, ns, name)["eth0"]; len(a) != 1 || !inPodCIDR(a[0]) {
		t.Fatalf("%s: eth0 addresses %v", name, a)
	}
	execPod(t, ns, name, "ping", "-c", "1", "-W", "2", "10.244.0.1")
}

// hasLine says whether one line of s has all the parts.
func hasLine(s string, parts ...string) bool {
	for _, l := range strings.Split(s, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
