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
	"path/filepath"
	"regexp"
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rewire-cni/rewire/pkg/handover"
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
	if _, err := edit(ctx, api, p, "hot-plug", selection.NetworksAnnotation, "macvlan-conf,other-net", "AddedInterface", 1,
		func(st []netstatus.Status) bool { return len(st) == 3 && st[2].Interface == "net2" }); err != nil {
		return err
	}

	// 3. Unplug it again.
	step("3. unplug: kubectl annotate pod samplepod --overwrite %s=macvlan-conf", selection.NetworksAnnotation)
	if _, err := edit(ctx, api, p, "unplug", selection.NetworksAnnotation, "macvlan-conf", "RemovedInterface", 1,
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
