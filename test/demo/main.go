// Command demo runs the seed document's Multus verification against Rewire
// on this machine: a local etcd + kube-apiserver, the rewired daemon, the
// macvlan-conf NetworkAttachmentDefinition and samplepod, a CNI ADD made the
// way a container runtime makes it, the pod's interfaces and network-status,
// then a CNI DEL and a complete cleanup. Run it as root: make demo.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

const master = "rwdemo0"

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

func step(format string, a ...interface{}) { fmt.Printf("==> "+format+"\n", a...) }

func run() error {
	root, _ := os.Getwd()
	tmp, err := os.MkdirTemp("", "rewire-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	step("building test tools (etcd, kube-apiserver, CNI plugins; cached after the first run)")
	tools, err := harness.ToolsDir(root)
	if err != nil {
		return err
	}
	step("building rewire and rewired")
	bin := filepath.Join(tmp, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/rewire", "./cmd/rewired")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return err
	}
	step("starting etcd + kube-apiserver")
	api, err := harness.StartAPIServer(tools, filepath.Join(tmp, "api"), filepath.Join(root, "deploy/crds/network-attachment-definitions.yaml"))
	if err != nil {
		return err
	}
	defer api.Stop()
	if err := makeMaster(); err != nil {
		return err
	}
	defer deleteLinks(master, "rwdemobr0")
	return demo(tmp, bin, tools, api)
}

func demo(tmp, bin, tools string, api *harness.APIServer) error {
	ctx := context.Background()
	ipam := filepath.Join(tmp, "ipam")
	confDir := filepath.Join(tmp, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	cluster := `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"rwdemobr0","isGateway":true,
	  "ipam":{"type":"host-local","dataDir":"` + ipam + `","ranges":[[{"subnet":"10.244.2.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`
	if err := os.WriteFile(filepath.Join(confDir, "10-cbr0.conflist"), []byte(cluster), 0o644); err != nil {
		return err
	}
	step("starting rewired (cluster network: bridge + host-local 10.244.2.0/24 from %s)", confDir)
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

	step("creating NetworkAttachmentDefinition macvlan-conf (the seed's config, master %s)", master)
	config := `{"cniVersion":"0.3.0","type":"macvlan","master":"` + master + `","mode":"bridge",
	  "ipam":{"type":"host-local","dataDir":"` + ipam + `","subnet":"192.168.1.0/24","rangeStart":"192.168.1.200",
	  "rangeEnd":"192.168.1.216","routes":[{"dst":"0.0.0.0/0"}],"gateway":"192.168.1.1"}}`
	n := &unstructured.Unstructured{Object: map[string]interface{}{"apiVersion": "k8s.cni.cncf.io/v1",
		"kind": "NetworkAttachmentDefinition", "metadata": map[string]interface{}{"name": "macvlan-conf", "namespace": "default"},
		"spec": map[string]interface{}{"config": config}}}
	if _, err := api.Dynamic.Resource(nad.GVR).Namespace("default").Create(ctx, n, metav1.CreateOptions{}); err != nil {
		return err
	}
	step("creating pod samplepod (annotation %s: macvlan-conf)", selection.NetworksAnnotation)
	pod, err := api.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "samplepod", Annotations: map[string]string{selection.NetworksAnnotation: "macvlan-conf"}},
		Spec:       corev1.PodSpec{NodeName: "demo-node", Containers: []corev1.Container{{Name: "samplepod", Image: "alpine"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	netns, err := testutils.NewNS()
	if err != nil {
		return err
	}
	defer func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) }()
	rt, err := harness.NewRuntime([]string{bin, tools}, filepath.Join(tmp, "runtime-cache"), d.Socket, d.StateDir, "1.1.0")
	if err != nil {
		return err
	}
	p := &harness.Pod{Namespace: "default", Name: "samplepod", UID: string(pod.UID), ContainerID: "demo0sandbox", NetNS: netns}
	step("CNI ADD through the rewire plugin, as containerd calls it")
	start := time.Now()
	r, err := rt.Add(ctx, p)
	if err != nil {
		return err
	}
	res, _ := current.NewResultFromResult(r)
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, ip.Address.String())
	}
	fmt.Printf("    ADD took %s; the runtime got the cluster network's result: %v\n", time.Since(start).Round(time.Millisecond), ips)

	step("interfaces in the pod (ip a)")
	if err := showLinks(netns); err != nil {
		return err
	}
	step("pod annotation %s", netstatus.Annotation)
	if err := showStatus(ctx, api, p); err != nil {
		return err
	}
	step("CNI DEL, then checking nothing is left")
	if err := rt.Del(ctx, p); err != nil {
		return err
	}
	left, _ := harness.TakeSnapshot(ipam, filepath.Join(d.StateDir, "sandboxes"))
	links, _ := harness.Links(netns)
	fmt.Printf("    interfaces left in the pod: %d, IP allocations and records left: %d\n", len(links), len(left.Files))
	step("done; stopping rewired, kube-apiserver and etcd and removing everything")
	return nil
}

func showLinks(netns ns.NetNS) error {
	if _, err := exec.LookPath("ip"); err == nil {
		out, err := exec.Command("ip", "-n", filepath.Base(netns.Path()), "addr").CombinedOutput()
		fmt.Println(indent(string(out)))
		return err
	}
	links, err := harness.Links(netns)
	for name, l := range links {
		fmt.Printf("    %s: %s %v\n", name, l.MAC, l.Addrs)
	}
	return err
}

func showStatus(ctx context.Context, api *harness.APIServer, p *harness.Pod) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		pod, err := api.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if v := pod.Annotations[netstatus.Annotation]; v != "" {
			fmt.Println(indent(v))
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no network-status after 10s")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

func makeMaster() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	deleteLinks(master)
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
