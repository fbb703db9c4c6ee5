// Command demo shows on this machine what Rewire is for, with a local etcd +
// kube-apiserver, the rewired daemon and the rewire plugin called the way a
// container runtime calls it:
//
//  1. the seed document's Multus verification: the macvlan-conf
//     NetworkAttachmentDefinition, samplepod, a CNI ADD, the pod's
//     interfaces and network-status;
//  2. a hot-plug: a second network added to the running pod by editing its
//     networks annotation;
//  3. an unplug: the annotation edited back;
//  4. a live switch of the pod's primary network to another CNI (bridge to
//     ptp) keeping its IP, while a 1 kHz UDP probe and a TCP connection from
//     outside the node run (probes sent and lost, the switch time);
//  5. the CNI DEL and a check that nothing is left.
//
// Every step waits for what it observes (the daemon's Events, the pod's
// network-status), never for a fixed time. Run it as root: make demo.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// The demo's host links (all named rwdemo*) and subnets.
const (
	master  = "rwdemo0"   // the macvlan networks' parent (a veth)
	bridge  = "rwdemobr0" // the cluster network's bridge
	client  = "rwdemocl"  // a client outside the node, routed through the host
	cluster = "10.244.2"  // the cluster network (and ptp-net: the same range)
	outside = "10.245.2"  // the client's subnet
)

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (it creates network namespaces and links)")
		os.Exit(1)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, a ...interface{}) { fmt.Printf("\n==> "+format+"\n", a...) }
func say(format string, a ...interface{})  { fmt.Printf("    "+format+"\n", a...) }

func run() error {
	root, _ := os.Getwd()
	tmp, err := os.MkdirTemp("", "rewire-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	tools, err := harness.ToolsDir(root)
	if err != nil {
		return err
	}
	fmt.Println("Rewire demo: a pod gets its networks as with Multus, then they change while it runs.")
	fmt.Println("==> setting up: etcd + kube-apiserver, rewired")
	bin, err := binaries(tmp)
	if err != nil {
		return err
	}
	api, err := harness.StartAPIServer(tools, filepath.Join(tmp, "api"), filepath.Join(root, "deploy/crds/network-attachment-definitions.yaml"))
	if err != nil {
		return err
	}
	defer api.Stop()
	if err := makeMaster(); err != nil {
		return err
	}
	defer deleteLinks(master, bridge)
	err = demo(tmp, bin, tools, api)
	if err == nil {
		step("done: rewired, kube-apiserver and etcd stopped, the demo's links and files removed")
	}
	return err
}

func demo(tmp, bin, tools string, api *harness.APIServer) error {
	ctx := context.Background()
	ipam := filepath.Join(tmp, "ipam")
	confDir := filepath.Join(tmp, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	clusterConf := `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"` + bridge + `","isGateway":true,
	  "capabilities":{"ips":true},
	  "ipam":{"type":"host-local","dataDir":"` + ipam + `","ranges":[[{"subnet":"` + cluster + `.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`
	if err := os.WriteFile(filepath.Join(confDir, "10-cbr0.conflist"), []byte(clusterConf), 0o644); err != nil {
		return err
	}
	d, err := harness.NewDaemon(filepath.Join(bin, "rewired"), filepath.Join(tmp, "daemon"), api.Kubeconfig, "demo-node",
		fmt.Sprintf("clusterNetwork: %s\nbinDirs: [%s]\n", confDir, tools))
	if err != nil {
		return err
	}
	if err := d.Start(); err != nil {
		return err
	}
	defer d.Stop()
	if err := d.WaitReady(10 * time.Second); err != nil {
		return err
	}
	say("cluster network cbr0: bridge %s + host-local %s.0/24 (%s)", bridge, cluster, confDir)

	netns, err := testutils.NewNS()
	if err != nil {
		return err
	}
	defer func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) }()
	scope := harness.Scope{
		Names:  regexp.MustCompile(`^rwdemo`),
		NetNS:  []ns.NetNS{netns},
		Tables: []int{handover.Table},
	}
	for _, p := range []string{cluster + ".0/24", outside + ".0/24", "192.168.1.0/24", "192.168.2.0/24"} {
		scope.Prefixes = append(scope.Prefixes, netip.MustParsePrefix(p))
	}
	watched := []string{ipam, filepath.Join(d.StateDir, "sandboxes")}
	before, err := harness.TakeScopedSnapshot(scope, watched...)
	if err != nil {
		return err
	}

	// 1. The seed document's verification, as with Multus.
	step("1. Multus-style ADD: NAD macvlan-conf (the seed's macvlan on %s), pod samplepod with %s: macvlan-conf",
		master, selection.NetworksAnnotation)
	if err := createNAD(ctx, api, "macvlan-conf", `{"cniVersion":"0.3.0","type":"macvlan","master":"`+master+`","mode":"bridge",
	  "ipam":{"type":"host-local","dataDir":"`+ipam+`","subnet":"192.168.1.0/24","rangeStart":"192.168.1.200",
	  "rangeEnd":"192.168.1.216","routes":[{"dst":"0.0.0.0/0"}],"gateway":"192.168.1.1"}}`); err != nil {
		return err
	}
	pod, err := api.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "samplepod", Annotations: map[string]string{selection.NetworksAnnotation: "macvlan-conf"}},
		Spec:       corev1.PodSpec{NodeName: "demo-node", Containers: []corev1.Container{{Name: "samplepod", Image: "alpine"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	rt, err := harness.NewRuntime([]string{bin, tools}, filepath.Join(tmp, "runtime-cache"), d.Socket, d.StateDir, "1.1.0")
	if err != nil {
		return err
	}
	p := &harness.Pod{Namespace: "default", Name: "samplepod", UID: string(pod.UID), ContainerID: "demo0sandbox", NetNS: netns}
	start := time.Now()
	r, err := rt.Add(ctx, p)
	if err != nil {
		return err
	}
	res, err := current.NewResultFromResult(r)
	if err != nil || len(res.IPs) == 0 {
		return fmt.Errorf("ADD result without an IP: %v %v", r, err)
	}
	podIP := res.IPs[0].Address.IP.String()
	say("CNI ADD through the rewire plugin took %s; the runtime got the cluster network's %s",
		time.Since(start).Round(time.Millisecond), res.IPs[0].Address.String())
	say("interfaces in the pod (ip -br addr, lo left out):")
	if err := showLinks(netns); err != nil {
		return err
	}
	st, err := waitStatus(ctx, api, p, "the ADD's", func(st []netstatus.Status) bool { return len(st) == 2 })
	if err != nil {
		return err
	}
	say("%s:", netstatus.Annotation)
	raw, _ := json.MarshalIndent(st, "      ", "  ")
	fmt.Println("      " + string(raw))

	// 2. Hot-plug a second network into the running pod.
	if err := createNAD(ctx, api, "other-net", `{"cniVersion":"1.0.0","name":"other-net","plugins":[{"type":"macvlan","master":"`+master+`","mode":"bridge",
	  "ipam":{"type":"host-local","dataDir":"`+ipam+`","ranges":[[{"subnet":"192.168.2.0/24","rangeStart":"192.168.2.200","rangeEnd":"192.168.2.216"}]]}}]}`); err != nil {
		return err
	}
	step("2. hot-plug into the running pod: kubectl annotate pod samplepod --overwrite %s=macvlan-conf,other-net",
		selection.NetworksAnnotation)
	if _, err := edit(ctx, api, p, "hot-plug", selection.NetworksAnnotation, "macvlan-conf,other-net", "InterfaceAdded", 1,
		func(st []netstatus.Status) bool { return len(st) == 3 && st[2].Interface == "net2" }); err != nil {
		return err
	}

	// 3. Unplug it again.
	step("3. unplug: kubectl annotate pod samplepod --overwrite %s=macvlan-conf", selection.NetworksAnnotation)
	if _, err := edit(ctx, api, p, "unplug", selection.NetworksAnnotation, "macvlan-conf", "InterfaceRemoved", 1,
		func(st []netstatus.Status) bool { return len(st) == 2 }); err != nil {
		return err
	}

	// 4. Switch the primary network to another CNI, with traffic.
	if err := createNAD(ctx, api, "ptp-net", `{"cniVersion":"1.0.0","name":"ptp-net","plugins":[{"type":"ptp","ipMasq":false,
	  "capabilities":{"ips":true},
	  "ipam":{"type":"host-local","dataDir":"`+ipam+`","ranges":[[{"subnet":"`+cluster+`.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`); err != nil {
		return err
	}
	step("4. live switch of the primary network from cbr0 (bridge) to ptp-net (ptp), keeping %s:\n"+
		"    kubectl annotate pod samplepod %s=ptp-net\n"+
		"    with a 1 kHz UDP probe and a TCP connection to %s from a client outside the node (%s.2, through the host)",
		podIP, selection.DefaultNetworkAnnotation, podIP, outside)
	echo, err := harness.StartEcho(netns, 7777)
	if err != nil {
		return err
	}
	defer echo.Close()
	cl, err := harness.NewClient(client, outside)
	if err != nil {
		return err
	}
	defer cl.Close()
	target := net.JoinHostPort(podIP, "7777")
	stream, err := harness.StartStream(cl.NS, target, time.Millisecond)
	if err != nil {
		return fmt.Errorf("TCP connection to the pod: %w", err)
	}
	probe, err := harness.StartProber(cl.NS, target, time.Millisecond)
	if err != nil {
		return err
	}
	if err := flowing(probe, stream); err != nil {
		return err
	}
	msg, err := edit(ctx, api, p, "switch", selection.DefaultNetworkAnnotation, "ptp-net", "NetworkSwitched", 1,
		func(st []netstatus.Status) bool {
			return len(st) == 2 && st[0].Name == "default/ptp-net" && st[0].Default && len(st[0].IPs) == 1 && st[0].IPs[0] == podIP
		})
	if err != nil {
		return err
	}
	if err := flowing(probe, stream); err != nil {
		return err
	}
	stats := probe.Stop()
	echoed, tcpErr := stream.Stop()
	if tcpErr != nil {
		return fmt.Errorf("the TCP connection did not survive the switch: %w", tcpErr)
	}
	took := "switched"
	if m := regexp.MustCompile(`traffic moved in ([0-9.]+ ms), done in ([0-9.]+ ms)`).FindStringSubmatch(msg); m != nil {
		took = fmt.Sprintf("traffic moved in %s (whole switch %s)", m[1], m[2])
	} else if m := regexp.MustCompile(`in ([0-9.]+ ms)`).FindStringSubmatch(msg); m != nil {
		took = "switched in " + m[1]
	}
	say("=> %s; the pod kept %s", took, podIP)
	say("=> 1 kHz UDP probe: %d sent, %d lost (longest gap %.1f ms); TCP connection: %d messages echoed, never broken",
		stats.Sent, stats.Lost(), float64(stats.MaxGap.Microseconds())/1000, echoed)
	say("interfaces in the pod (ip -br addr, lo left out):")
	if err := showLinks(netns); err != nil {
		return err
	}
	cl.Close()

	// 5. DEL and the leak check.
	step("5. CNI DEL, then checking that nothing is left")
	if err := rt.Del(ctx, p); err != nil {
		return err
	}
	links, err := harness.Links(netns)
	if err != nil {
		return err
	}
	delete(links, "lo")
	after, err := harness.TakeScopedSnapshot(scope, watched...)
	if err != nil {
		return err
	}
	diff := before.Without(bridge, master, master+"p").Diff(after.Without(bridge, master, master+"p"))
	say("interfaces left in the pod besides lo: %d; IP allocations, records, host links, addresses, routes and rules left: %d",
		len(links), strings.Count(diff, "\n"))
	if len(links) > 0 || diff != "" {
		return fmt.Errorf("left after DEL: pod interfaces %v\n%s", keys(links), diff)
	}
	return nil
}

// binaries returns the directory holding rewire and rewired: the demo's
// own when they were built next to it (make demo does), else a fresh build
// under tmp.
func binaries(tmp string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		_, err1 := os.Stat(filepath.Join(dir, "rewire"))
		_, err2 := os.Stat(filepath.Join(dir, "rewired"))
		_, err3 := os.Stat(filepath.Join(dir, "rewire-plugin"))
		if err1 == nil && err2 == nil && err3 == nil {
			return dir, nil
		}
	}
	bin := filepath.Join(tmp, "bin")
	fmt.Println("    building rewire and rewired")
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/rewired")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return bin, err
	}
	root, err := os.Getwd()
	if err != nil {
		return bin, err
	}
	return bin, harness.BuildPlugin(root, bin)
}

// createNAD creates a NetworkAttachmentDefinition in default.
func createNAD(ctx context.Context, api *harness.APIServer, name, config string) error {
	n := &unstructured.Unstructured{Object: map[string]interface{}{"apiVersion": "k8s.cni.cncf.io/v1",
		"kind": "NetworkAttachmentDefinition", "metadata": map[string]interface{}{"name": name, "namespace": "default"},
		"spec": map[string]interface{}{"config": config}}}
	_, err := api.Dynamic.Resource(nad.GVR).Namespace("default").Create(ctx, n, metav1.CreateOptions{})
	return err
}

// edit sets a pod annotation as kubectl annotate does, then waits for the
// daemon's n-th Event with reason (failing on any Event saying the edit was
// refused or failed) and for network-status to show the outcome (done),
// and prints both.
func edit(ctx context.Context, api *harness.APIServer, p *harness.Pod, what, annotation, value, reason string, n int,
	done func([]netstatus.Status) bool) (string, error) {
	body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"annotations": map[string]string{annotation: value}}})
	start := time.Now()
	if _, err := api.Client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		return "", err
	}
	msg, err := waitEvent(ctx, api, p, reason, n)
	if err != nil {
		return "", err
	}
	took := time.Since(start)
	st, err := waitStatus(ctx, api, p, "the "+what, done)
	if err != nil {
		return "", err
	}
	say("Event %s: %s (%s after the edit)", reason, msg, took.Round(time.Millisecond))
	say("%s:", netstatus.Annotation)
	printStatus(st)
	return msg, nil
}

// failures are the Event reasons saying an edit was refused or failed.
var failures = []string{"InterfaceRejected", "InterfaceAddFailed", "InterfaceRemoveFailed", "SwitchRejected", "SwitchFailed"}

// waitEvent waits until the pod has n Events with reason and returns the
// newest one's message.
func waitEvent(ctx context.Context, api *harness.APIServer, p *harness.Pod, reason string, n int) (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := api.Client.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			return "", err
		}
		var msgs []string
		for _, ev := range evs.Items {
			for _, f := range failures {
				if ev.Reason == f {
					return "", fmt.Errorf("rewired reported %s: %s", ev.Reason, ev.Message)
				}
			}
			if ev.Reason == reason {
				msgs = append(msgs, ev.Message)
			}
		}
		if len(msgs) >= n {
			return msgs[len(msgs)-1], nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("no %s Event after 60s", reason)
}

// waitStatus waits until the pod's network-status satisfies done.
func waitStatus(ctx context.Context, api *harness.APIServer, p *harness.Pod, what string, done func([]netstatus.Status) bool) ([]netstatus.Status, error) {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		pod, err := api.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if last = pod.Annotations[netstatus.Annotation]; last != "" {
			var st []netstatus.Status
			if err := json.Unmarshal([]byte(last), &st); err != nil {
				return nil, fmt.Errorf("%s: %w", netstatus.Annotation, err)
			}
			if done(st) {
				return st, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("network-status never showed %s outcome; last: %s", what, last)
}

// printStatus prints network-status one interface a line.
func printStatus(st []netstatus.Status) {
	for _, s := range st {
		def := ""
		if s.Default {
			def = "default route"
		}
		fmt.Println(strings.TrimRight(fmt.Sprintf("      %-5s %-22s %-18s %s", s.Interface, s.Name, strings.Join(s.IPs, ","), def), " "))
	}
}

// flowing waits until the probe and the TCP stream get fresh replies.
func flowing(probe *harness.Prober, stream *harness.Stream) error {
	p0 := probe.Stats().Received
	s0, err := stream.Echoed()
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		var s int
		if s, err = stream.Echoed(); err == nil && probe.Stats().Received > p0+50 && s > s0+50 {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("the TCP connection to the pod broke: %w", err)
	}
	return fmt.Errorf("traffic to the pod is not flowing: probe %s (the host must forward between %s and the pod networks: "+
		"net.ipv4.ip_forward, the iptables FORWARD chain)", probe.Stats(), client)
}

func showLinks(netns ns.NetNS) error {
	if _, err := exec.LookPath("ip"); err == nil {
		out, err := exec.Command("ip", "-br", "-n", filepath.Base(netns.Path()), "addr").CombinedOutput()
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			if !strings.HasPrefix(l, "lo ") {
				lines = append(lines, strings.TrimRight(l, " "))
			}
		}
		fmt.Println(indent(strings.Join(lines, "\n")))
		return err
	}
	links, err := harness.Links(netns)
	for name, l := range links {
		fmt.Printf("      %s: %s %v\n", name, l.MAC, l.Addrs)
	}
	return err
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func keys(m map[string]harness.Link) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func makeMaster() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	deleteLinks(master, bridge, client)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: master}, PeerName: master + "p"}); err != nil {
		return fmt.Errorf("creating veth %s: %w", master, err)
	}
	for _, n := range []string{master, master + "p"} {
		l, err := netlinksafe.LinkByName(n)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

func deleteLinks(names ...string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, n := range names {
		if l, err := netlinksafe.LinkByName(n); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
}
