package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rewire-cni/rewire/test/harness"
)

// podIP is the address of the pod's eth0 as the pod sees it.
func podIP(t testing.TB, p *pod) string {
	t.Helper()
	links, err := harness.Links(p.NetNS)
	must(t, err)
	if l, ok := links["eth0"]; ok && len(l.Addrs) > 0 {
		ip, _, _ := net.ParseCIDR(l.Addrs[0])
		return ip.String()
	}
	return fmt.Sprintf("none (links %v)", links)
}

// flannelChurn calls flannel's CNI plugin itself on n (no Rewire: as a
// runtime configured with the stock config list would), an ADD and a DEL
// of count sandboxes one after another in one netns, and returns the
// address each ADD gave.
func flannelChurn(t testing.TB, n *node, count int) []string {
	t.Helper()
	netns, err := testutils.NewNS()
	must(t, err)
	defer func() { _ = netns.Close(); _ = testutils.UnmountNS(netns) }()
	conf := `{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`
	call := func(command, id string) []byte {
		argv := n.Command("env", "CNI_COMMAND="+command, "CNI_CONTAINERID="+id, "CNI_NETNS="+netns.Path(),
			"CNI_IFNAME=eth0", "CNI_PATH="+tools, filepath.Join(tools, "flannel"))
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdin = strings.NewReader(conf)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("flannel %s of %s on %s: %v: %s", command, id, n.Name, err, out)
		}
		return out
	}
	var ips []string
	for i := 0; i < count; i++ {
		id := fmt.Sprintf("direct%d-%d", os.Getpid(), i)
		var res current.Result
		must(t, json.Unmarshal(call("ADD", id), &res))
		if len(res.IPs) == 0 {
			t.Fatalf("flannel ADD of %s gave no address", id)
		}
		ips = append(ips, res.IPs[0].Address.IP.String())
		call("DEL", id)
	}
	return ips
}

// churnSandboxes adds and deletes count sandboxes on n's cluster network,
// four at a time (four pods, each recreated count/4 times, as a crash-looping
// workload's sandboxes are), calling got with each sandbox's address. No ADD
// may fail and no address may be held by two live sandboxes.
func churnSandboxes(t *testing.T, n *node, prefix string, count int, got func(ip string)) {
	t.Helper()
	const workers = 4
	var mu sync.Mutex
	live := map[string]string{}
	var wg sync.WaitGroup
	before := strings.Count(n.daemon.Log(), "stepping over")
	for w := 0; w < workers; w++ {
		name := fmt.Sprintf("%s-%d", prefix, w)
		obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		created, err := c.API.Client.CoreV1().Pods("default").Create(context.Background(), obj, metav1.CreateOptions{})
		must(t, err)
		netns, err := testutils.NewNS()
		must(t, err)
		wg.Go(func() {
			defer func() {
				_ = netns.Close()
				_ = testutils.UnmountNS(netns)
				_ = c.API.Client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{})
			}()
			for i := 0; i < count/workers; i++ {
				sb := &harness.Pod{Namespace: "default", Name: name, UID: string(created.UID), NetNS: netns,
					ContainerID: fmt.Sprintf("c%d-%s-%d", os.Getpid(), name, i)}
				res, err := n.rt.Add(context.Background(), sb)
				if err != nil {
					t.Errorf("sandbox %d of %s: ADD: %v", i, name, err)
					return
				}
				r, err := current.NewResultFromResult(res)
				if err != nil || len(r.IPs) == 0 {
					t.Errorf("sandbox %d of %s: result %v: %v", i, name, res, err)
					return
				}
				ip := r.IPs[0].Address.IP.String()
				mu.Lock()
				if other, ok := live[ip]; ok {
					t.Errorf("%s handed out to %s while %s holds it", ip, sb.ContainerID, other)
				}
				live[ip] = sb.ContainerID
				got(ip)
				mu.Unlock()
				if err := n.rt.Del(context.Background(), sb); err != nil {
					t.Errorf("sandbox %d of %s: DEL: %v", i, name, err)
					return
				}
				mu.Lock()
				delete(live, ip)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if after := strings.Count(n.daemon.Log(), "stepping over"); after != before {
		t.Errorf("rewired stepped over held addresses %d times: flannel's store handed them out", after-before)
	}
}

// assertClean checks that a node keeps nothing of the pods deleted: no
// veth, no host route to a pod, no IPAM reservation, no flannel scratch
// file, no Rewire record or cache file, and the bridge's proxy ARP sysctls
// as they were.
func assertClean(t *testing.T, n *node) {
	t.Helper()
	must(t, n.NetNS.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if name := l.Attrs().Name; name != "lo" && name != "eth0" && name != "cni0" {
				t.Errorf("%s: link %s (%s) left", n.Name, name, l.Type())
			}
		}
		routes, err := netlinksafe.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if ones, bits := maskOf(r.Dst); r.Dst != nil && ones == bits && !r.Dst.IP.IsLinkLocalUnicast() {
				t.Errorf("%s: host route %s left", n.Name, r.Dst)
			}
		}
		return nil
	}))
	for _, dir := range []string{"/var/lib/cni/networks", "/var/lib/cni/flannel", "/var/lib/cni/flannel-hostgw"} {
		for _, f := range files(n.Path(dir)) {
			if base := filepath.Base(f); base != "lock" && !strings.HasPrefix(base, "last_reserved_ip") {
				t.Errorf("%s: %s left", n.Name, f)
			}
		}
	}
	for _, dir := range []string{filepath.Join(n.daemon.StateDir, "sandboxes"), filepath.Join(n.daemon.StateDir, "cache"), filepath.Join(n.Dir, "runtime-cache")} {
		for _, f := range files(dir) {
			t.Errorf("%s: %s left", n.Name, f)
		}
	}
	for sysctl, want := range map[string]string{"/proc/sys/net/ipv4/conf/cni0/proxy_arp": "0", "/proc/sys/net/ipv4/neigh/cni0/proxy_delay": "80"} {
		if out, err := n.Exec("cat", sysctl); err == nil && strings.TrimSpace(out) != want {
			t.Errorf("%s: %s is %s, was %s", n.Name, sysctl, strings.TrimSpace(out), want)
		}
	}
}

func maskOf(n *net.IPNet) (int, int) {
	if n == nil {
		return 0, 32
	}
	return n.Mask.Size()
}

func files(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	return out
}
