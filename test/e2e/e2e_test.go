// Package e2e runs Rewire on a real single-node Kubernetes (kubelet,
// containerd, runc; hack/node.sh) installed with `kubectl apply -k deploy/`
// (and, last, with helm from charts/rewire: e2e_4_helm_test.go).
// It is skipped unless REWIRE_E2E=1 and KUBECONFIG name such a node: run it
// with `make e2e`, which builds everything, brings the node up, runs this
// suite and tears the node down.
//
// The suite uses kubectl and helm (REWIRE_TOOLS_DIR or PATH) and the host's ip
// command; the images busybox:e2e and rewire:dev must be in the node's
// containerd (hack/node.sh up imports them).
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const (
	networksAnn = "k8s.v1.cni.cncf.io/networks"
	statusAnn   = "k8s.v1.cni.cncf.io/network-status"
	// mvMaster is the host-side master of the macvlan networks: one end of a
	// veth pair the suite makes (the kernel here has no dummy links).
	mvMaster = "rwe2e-mv0"
	mvPeer   = "rwe2e-mv1"
)

var (
	kubectlBin string
	repoRoot   string
)

func TestMain(m *testing.M) {
	if os.Getenv("REWIRE_E2E") != "1" || os.Getenv("KUBECONFIG") == "" {
		fmt.Println("e2e: skipped (set REWIRE_E2E=1 and KUBECONFIG, or run make e2e)")
		os.Exit(0)
	}
	kubectlBin = "kubectl"
	if d := os.Getenv("REWIRE_TOOLS_DIR"); d != "" {
		kubectlBin = filepath.Join(d, "kubectl")
	}
	wd, _ := os.Getwd()
	repoRoot = filepath.Join(wd, "..", "..")
	os.Exit(m.Run())
}

// kubectl runs kubectl and returns its stdout; stderr goes into the error.
func kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(kubectlBin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func mustKubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func getPod(ns, name string) (*corev1.Pod, error) {
	out, err := kubectl("", "-n", ns, "get", "pod", name, "-o", "json")
	if err != nil {
		return nil, err
	}
	var p corev1.Pod
	return &p, json.Unmarshal([]byte(out), &p)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podYAML is a busybox pod that exits at once on SIGTERM.
func podYAML(ns, name string, annotations map[string]string) string {
	var ann strings.Builder
	if len(annotations) > 0 {
		ann.WriteString("  annotations:\n")
		keys := make([]string, 0, len(annotations))
		for k := range annotations {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, _ := json.Marshal(annotations[k])
			fmt.Fprintf(&ann, "    %s: %s\n", k, v)
		}
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels: {e2e: "true"}
%sspec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:e2e
    imagePullPolicy: Never
    command: [/bin/sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
`, name, ns, ann.String())
}

func createPod(t testing.TB, ns, name string, annotations map[string]string) {
	t.Helper()
	mustKubectl(t, podYAML(ns, name, annotations), "apply", "-f", "-")
}

func waitRunning(t testing.TB, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	eventually(t, timeout, "pod "+ns+"/"+name+" Ready", func() error {
		var err error
		if p, err = getPod(ns, name); err != nil {
			return err
		}
		if !podReady(p) {
			return fmt.Errorf("phase %s, events: %s", p.Status.Phase, podEvents(ns, name))
		}
		return nil
	})
	return p
}

func podEvents(ns, name string) string {
	out, _ := kubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name="+name,
		"-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}")
	return strings.TrimSpace(out)
}

func deletePods(t testing.TB, ns string, names ...string) {
	t.Helper()
	args := append([]string{"-n", ns, "delete", "pod", "--ignore-not-found", "--wait=true", "--timeout=90s"}, names...)
	mustKubectl(t, "", args...)
}

func execPod(t testing.TB, ns, name string, cmd ...string) string {
	t.Helper()
	return mustKubectl(t, "", append([]string{"-n", ns, "exec", name, "--"}, cmd...)...)
}

// podAddrs parses `ip -o -4 addr` inside the pod: interface -> IPv4 addresses.
func podAddrs(t testing.TB, ns, name string) map[string][]string {
	t.Helper()
	out := execPod(t, ns, name, "ip", "-o", "-4", "addr")
	addrs := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[2] == "inet" {
			ip, _, err := net.ParseCIDR(f[3])
			if err == nil {
				addrs[f[1]] = append(addrs[f[1]], ip.String())
			}
		}
	}
	return addrs
}

type netStatus struct {
	Name      string   `json:"name"`
	Interface string   `json:"interface"`
	IPs       []string `json:"ips"`
	Mac       string   `json:"mac"`
	Default   bool     `json:"default"`
}

func networkStatus(p *corev1.Pod) ([]netStatus, error) {
	raw, ok := p.Annotations[statusAnn]
	if !ok {
		return nil, fmt.Errorf("no %s annotation", statusAnn)
	}
	var st []netStatus
	return st, json.Unmarshal([]byte(raw), &st)
}

func inRange(ip string, lo, hi int) bool {
	p := net.ParseIP(ip).To4()
	return p != nil && p[0] == 192 && p[1] == 168 && p[2] == 1 && int(p[3]) >= lo && int(p[3]) <= hi
}

func inPodCIDR(ip string) bool {
	_, n, _ := net.ParseCIDR("10.244.0.0/24")
	return n.Contains(net.ParseIP(ip))
}

// hostLocalIPs lists the addresses host-local holds for a network on the node.
func hostLocalIPs(network string) []string {
	ents, _ := os.ReadDir(filepath.Join("/var/lib/cni/networks", network))
	var ips []string
	for _, e := range ents {
		if net.ParseIP(e.Name()) != nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// records lists Rewire's sandbox records on the node.
func records() []string {
	ents, _ := os.ReadDir("/var/lib/rewire/sandboxes")
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func hostCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// macvlanMaster makes the veth pair whose one end masters the macvlan
// networks; removed at the end of the test.
func macvlanMaster(t testing.TB) {
	t.Helper()
	exec.Command("ip", "link", "del", mvMaster).Run()
	hostCmd(t, "ip", "link", "add", mvMaster, "type", "veth", "peer", "name", mvPeer)
	hostCmd(t, "ip", "link", "set", mvMaster, "up")
	hostCmd(t, "ip", "link", "set", mvPeer, "up")
	t.Cleanup(func() { exec.Command("ip", "link", "del", mvMaster).Run() })
}

func macvlanNAD(ns, name, subnet string, lo, hi int) string {
	conf := fmt.Sprintf(`{"cniVersion":"0.3.1","type":"macvlan","master":%q,"mode":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"%s.0/24","rangeStart":"%s.%d","rangeEnd":"%s.%d"}]]}}`,
		mvMaster, subnet, subnet, lo, subnet, hi)
	return fmt.Sprintf(`apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: %s
  namespace: %s
spec:
  config: '%s'
`, name, ns, conf)
}
