package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Cluster is several Kubernetes nodes simulated on this machine: each node
// is a network namespace of its own, joined to the others by a veth on one
// underlay bridge of the host (as a node's NIC on a LAN), and a mount
// namespace of its own, in which the node's directories are bind-mounted
// over the paths CNI daemons and plugins use (NodeDirs). The nodes share
// one kube-apiserver, served on the underlay.
type Cluster struct {
	Dir    string
	Bridge string // the underlay bridge in the host namespace
	API    *APIServer
	Nodes  []*Node
	// Kubeconfig reaches the API server from the nodes (the underlay).
	Kubeconfig string
	// made are the NodeDirs the host did not have (their mount points).
	made []string
}

// NodeDirs are the paths each node has of its own (bind-mounted from
// Node.Dir): flannel's subnet files, CNI state (flannel's scratch files,
// host-local's stores) and the CNI config dir.
var NodeDirs = []string{"/run/flannel", "/var/lib/cni", "/etc/cni/net.d"}

// Underlay is the underlay's /24: the host is .1, node i is .(11+i).
const Underlay = "172.31.250"

// StartCluster starts the API server on the underlay and n nodes named
// prefix-1 … prefix-n, each with a Node object whose spec.podCIDR is
// podCIDR(i) (a controller-manager's node IPAM would set it).
func StartCluster(tools, dir, prefix string, n int, podCIDR func(i int) string, crdFiles ...string) (*Cluster, error) {
	c := &Cluster{Dir: dir, Bridge: prefix + "-ul"}
	for _, d := range NodeDirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			c.made = append(c.made, d)
		}
	}
	if err := c.underlay(); err != nil {
		c.Stop()
		return nil, err
	}
	var err error
	if c.API, err = StartAPIServerOn(tools, filepath.Join(dir, "api"), Underlay+".1", crdFiles...); err != nil {
		c.Stop()
		return nil, err
	}
	c.Kubeconfig = c.API.Kubeconfig
	for i := 0; i < n; i++ {
		node, err := c.addNode(fmt.Sprintf("%s-%d", prefix, i+1), i, podCIDR(i))
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("node %d: %w", i+1, err)
		}
		c.Nodes = append(c.Nodes, node)
	}
	return c, nil
}

// underlay makes the host's bridge with the underlay's first address (one
// of that name, left by a run killed before its cleanup, is replaced with
// its veths).
func (c *Cluster) underlay() error {
	return hostDo(func() error {
		if links, err := netlinksafe.LinkList(); err == nil {
			for _, l := range links {
				if name := l.Attrs().Name; name == c.Bridge || strings.HasPrefix(name, c.Bridge+"-e") {
					_ = netlink.LinkDel(l)
				}
			}
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.Bridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("underlay bridge %s: %w", c.Bridge, err)
		}
		return upWithAddr(c.Bridge, Underlay+".1/24")
	})
}

// Stop stops every node's processes, removes the nodes and the underlay,
// and stops the API server.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
	for _, d := range c.made {
		_ = os.Remove(d) // the nodes' mount points, when empty
	}
	if c.API != nil {
		c.API.Stop()
	}
	_ = hostDo(func() error {
		if l, err := netlinksafe.LinkByName(c.Bridge); err == nil {
			_ = netlink.LinkDel(l)
		}
		return nil
	})
}

// Node is one simulated node.
type Node struct {
	Name    string
	IP      string // on the underlay (its eth0)
	PodCIDR string
	// Dir holds the node's own directories (see NodeDirs: Path).
	Dir   string
	NetNS ns.NetNS

	holder *process // keeps the node's mount namespace (PID: Exec)
	mu     sync.Mutex
	procs  map[string]*process
}

// addNode makes node i: its netns with eth0 on the underlay and forwarding
// on, its mount namespace, and its Node object.
func (c *Cluster) addNode(name string, i int, podCIDR string) (*Node, error) {
	n := &Node{Name: name, IP: fmt.Sprintf("%s.%d", Underlay, 11+i), PodCIDR: podCIDR,
		Dir: filepath.Join(c.Dir, name), procs: map[string]*process{}}
	var err error
	if n.NetNS, err = testutils.NewNS(); err != nil { // also makes /run/netns a shared mount
		return nil, err
	}
	if err := n.link(c.Bridge, fmt.Sprintf("%s-e%d", c.Bridge, i+1)); err != nil {
		return n, err
	}
	if err := n.mountNamespace(); err != nil {
		return n, err
	}
	// A kubelet's Node has annotations (flanneld writes into the map).
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name},
		Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}}}
	_, err = c.API.Client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{})
	return n, err
}

// link gives the node its eth0 (the peer, host, on the underlay bridge).
func (n *Node) link(bridge, host string) error {
	err := hostDo(func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: host + "n"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("underlay veth %s: %w", host, err)
		}
		br, err := netlinksafe.LinkByName(bridge)
		if err != nil {
			return err
		}
		l, err := netlinksafe.LinkByName(host)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		peer, err := netlinksafe.LinkByName(host + "n")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(peer, int(n.NetNS.Fd()))
	})
	if err != nil {
		return err
	}
	return n.NetNS.Do(func(ns.NetNS) error {
		peer, err := netlinksafe.LinkByName(host + "n")
		if err == nil {
			err = netlink.LinkSetName(peer, "eth0")
		}
		if err != nil {
			return err
		}
		if err := upWithAddr("eth0", n.IP+"/24"); err != nil {
			return err
		}
		lo, err := netlinksafe.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			return err
		}
		for _, s := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile("/proc/sys/"+s, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// mountNamespace starts the process that holds the node's mount namespace:
// made in the node's netns as a slave of the host's mounts (so that pod
// netns mounted under /run/netns later show up in it), with the node's
// directories bind-mounted over NodeDirs and sysfs mounted anew (the
// node's links under /sys/class/net).
func (n *Node) mountNamespace() error {
	script := []string{"set -e"}
	for _, d := range NodeDirs {
		if err := os.MkdirAll(n.Path(d), 0o755); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mkdir -p %s && mount --bind %s %s", d, n.Path(d), d))
	}
	ready := filepath.Join(n.Dir, "mounted")
	script = append(script, "mount -t sysfs sysfs /sys", "touch "+ready, "exec sleep infinity")
	var err error
	n.holder, err = startProcess(filepath.Join(n.Dir, "mountns.log"), "nsenter", "--net="+n.NetNS.Path(),
		"unshare", "--mount", "--propagation", "slave", "sh", "-c", strings.Join(script, "\n"))
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			return nil
		}
		if n.holder.exited() {
			break
		}
	}
	log, _ := os.ReadFile(filepath.Join(n.Dir, "mountns.log"))
	return fmt.Errorf("node %s: mount namespace not ready: %s", n.Name, log)
}

// Path is where the host sees a path of the node's own directories (one
// of NodeDirs or below), or p itself.
func (n *Node) Path(p string) string {
	for _, d := range NodeDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return filepath.Join(n.Dir, "root", p)
		}
	}
	return p
}

// Command is argv run in the node's network and mount namespaces.
func (n *Node) Command(argv ...string) []string {
	return append([]string{"nsenter", "-t", fmt.Sprint(n.holder.pid()), "--mount", "--net", "--"}, argv...)
}

// Exec runs a command in the node and returns its combined output.
func (n *Node) Exec(argv ...string) (string, error) {
	cmd := n.Command(argv...)
	out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", strings.Join(argv, " "), n.Name, err, out)
	}
	return string(out), nil
}

// Start starts a named background process in the node (its log is
// Dir/<name>.log); env entries are added to the command's environment.
func (n *Node) Start(name string, env []string, argv ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.procs[name]; p != nil && !p.exited() {
		return fmt.Errorf("node %s: %s runs already", n.Name, name)
	}
	args := n.Command(argv...)
	if len(env) > 0 {
		args = append([]string{"env"}, append(env, args...)...)
	}
	p, err := startProcess(n.LogFile(name), args...)
	if err != nil {
		return err
	}
	n.procs[name] = p
	return nil
}

// LogFile is the log of the node's process name.
func (n *Node) LogFile(name string) string { return filepath.Join(n.Dir, name+".log") }

// Running reports whether the node's process name runs.
func (n *Node) Running(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.procs[name]
	return p != nil && !p.exited()
}

// StopProcess stops the node's process name (SIGTERM, then SIGKILL).
func (n *Node) StopProcess(name string) {
	n.mu.Lock()
	p := n.procs[name]
	delete(n.procs, name)
	n.mu.Unlock()
	p.stop()
}

// Stop stops the node's processes and removes its netns (and so its links).
func (n *Node) Stop() {
	n.mu.Lock()
	names := make([]string, 0, len(n.procs))
	for name := range n.procs {
		names = append(names, name)
	}
	n.mu.Unlock()
	for _, name := range names {
		n.StopProcess(name)
	}
	n.holder.kill()
	if n.NetNS != nil {
		_ = n.NetNS.Close()
		_ = testutils.UnmountNS(n.NetNS)
	}
}

// WaitFile waits until the node has the file p (one of its own paths).
func (n *Node) WaitFile(p string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(n.Path(p)); err == nil {
			return nil
		} else if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return fmt.Errorf("node %s: %s: %w", n.Name, p, err)
		}
	}
}

// RouteDev is the interface the node routes dst through ("" when it has no
// route).
func (n *Node) RouteDev(dst net.IP) (string, error) {
	dev := ""
	err := n.NetNS.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteGet(dst)
		if err != nil || len(routes) == 0 {
			return nil
		}
		l, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err == nil {
			dev = l.Attrs().Name
		}
		return err
	})
	return dev, err
}
