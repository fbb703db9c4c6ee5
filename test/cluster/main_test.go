// Package cluster tests Rewire on several nodes running a real CNI: three
// simulated nodes (harness.Cluster: a netns and a mount namespace each, on
// one underlay bridge), one kube-apiserver, and on every node a real
// flanneld (vxlan: the cluster network A, with the stock kube-flannel
// config list), a second flanneld (host-gw: the target network B, whose
// flannel plugin delegates to ptp), and rewired.
package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/test/harness"
)

var (
	tools, binDir string
	c             *harness.Cluster
	nodes         []*node
)

const (
	// network is the pod network both flannels share (the cluster's
	// cluster-cidr); node i has 10.244.(i+1).0/24.
	network = "10.244.0.0/16"
	// The stock kube-flannel config list (kube-flannel.yml's cni-conf.json).
	flannelConflist = `{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},
	  {"type":"portmap","capabilities":{"portMappings":true}}]}`
	flannelConfFile = "/etc/cni/net.d/10-flannel.conflist"
	// B: flannel with the host-gw backend, its own subnet file, annotation
	// prefix and scratch dir, delegating to ptp (a default route too).
	hostgwConflist = `{"name":"hostgw","cniVersion":"0.3.1","plugins":[{"type":"flannel","subnetFile":"/run/flannel/hostgw.env",
	  "dataDir":"/var/lib/cni/flannel-hostgw","ipam":{"routes":[{"dst":"0.0.0.0/0"}]},"delegate":{"type":"ptp"}},
	  {"type":"portmap","capabilities":{"portMappings":true}}]}`
	hostgwConfFile = "/etc/cni/net.d/20-hostgw.conflist"
	hostgwPrefix   = "hostgw.flannel.alpha.coreos.com"
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("FAIL: the cluster tests need root (network and mount namespaces, links)")
		return 1
	}
	root, _ := filepath.Abs("../..")
	var err error
	if tools, err = harness.ToolsDir(root); err != nil {
		fmt.Println(err)
		return 1
	}
	for _, b := range []string{"flanneld", "flannel"} {
		if _, err := os.Stat(filepath.Join(tools, b)); err != nil {
			fmt.Printf("FAIL: %s is not in the tools dir %s (hack/build-tools.sh builds it): %v\n", b, tools, err)
			return 1
		}
	}
	tmp, err := os.MkdirTemp("", "rewire-cluster-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(tmp)
	binDir = filepath.Join(tmp, "bin")
	if err := harness.BuildRewire(root, binDir, os.Getenv("REWIRE_RACE") != ""); err != nil {
		fmt.Println(err)
		return 1
	}
	start := time.Now()
	c, err = harness.StartCluster(tools, filepath.Join(tmp, "cluster"), "rwc", 3,
		func(i int) string { return fmt.Sprintf("10.244.%d.0/24", i+1) },
		filepath.Join(root, "deploy/crds/network-attachment-definitions.yaml"), filepath.Join(root, "deploy/crds/networkmigrations.yaml"))
	if err != nil {
		fmt.Println("starting the cluster:", err)
		return 1
	}
	defer c.Stop()
	defer func() {
		for _, n := range nodes {
			if n.daemon != nil {
				n.daemon.Stop()
			}
		}
	}()
	if err := startNodes(); err != nil {
		fmt.Println(err)
		dumpLogs()
		return 1
	}
	fmt.Printf("cluster of %d nodes with flanneld and rewired ready in %s\n", len(nodes), time.Since(start).Round(time.Millisecond))
	code := m.Run()
	if code != 0 || os.Getenv("CLUSTER_LOGS") != "" {
		dumpLogs()
	}
	return code
}

// startNodes starts flanneld (vxlan) and rewired on every node with the
// stock kube-flannel config list as the cluster network, as a flannel
// cluster that installed Rewire looks.
func startNodes() error {
	ctx := context.Background()
	for i, n := range c.Nodes {
		nd := &node{Node: n, i: i}
		nodes = append(nodes, nd)
		if i == 0 { // the canary (labels are read at rewired's start)
			if err := label(ctx, n.Name, "canary", "true"); err != nil {
				return err
			}
		}
		if err := os.WriteFile(n.Path(flannelConfFile), []byte(flannelConflist), 0o644); err != nil {
			return err
		}
		if err := nd.startFlannel("flanneld", "vxlan", "/run/flannel/subnet.env", "flannel.alpha.coreos.com", true); err != nil {
			return err
		}
	}
	for _, nd := range nodes {
		if err := nd.WaitFile("/run/flannel/subnet.env", 30*time.Second); err != nil {
			return fmt.Errorf("flanneld (vxlan): %w", err)
		}
		if err := nd.startRewired(flannelConfFile, "/run/flannel/subnet.env"); err != nil {
			return err
		}
	}
	return nil
}

func label(ctx context.Context, node, k, v string) error {
	n, err := c.API.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	n.Labels[k] = v
	_, err = c.API.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	return err
}

// node is a cluster node with its rewired and runtime stand-in.
type node struct {
	*harness.Node
	i      int
	daemon *harness.Daemon
	rt     *harness.Runtime
}

// startFlannel starts a flanneld on the node: backend vxlan or host-gw,
// its subnet file, its Node annotation prefix.
func (n *node) startFlannel(name, backend, subnetFile, prefix string, ipMasq bool) error {
	conf := filepath.Join(n.Dir, name+"-net-conf.json")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, backend)), 0o644); err != nil {
		return err
	}
	args := []string{filepath.Join(tools, "flanneld"), "--kube-subnet-mgr", "--kubeconfig-file", c.Kubeconfig, "--iface", "eth0",
		"--net-config-path", conf, "--subnet-file", subnetFile, "--kube-annotation-prefix", prefix, "--healthz-port", "0"}
	if ipMasq {
		args = append(args, "--ip-masq")
	}
	return n.Start(name, []string{"NODE_NAME=" + n.Name}, args...)
}

// startRewired starts the node's rewired with cluster the cluster network
// and ready the readiness indicator file (its daemon's subnet file).
func (n *node) startRewired(cluster, ready string) error {
	cfg := fmt.Sprintf("clusterNetwork: %s\nconfDir: /etc/cni/net.d\nbinDirs: [%s]\nreadinessIndicatorFile: %s\nmultusNamespace: kube-system\n",
		cluster, tools, ready)
	var err error
	if n.daemon == nil {
		if n.daemon, err = harness.NewDaemon(filepath.Join(binDir, "rewired"), filepath.Join(n.Dir, "rewired"), c.Kubeconfig, n.Name, cfg); err != nil {
			return err
		}
		n.daemon.In = n.Command
		if n.rt, err = harness.NewRuntime([]string{binDir}, filepath.Join(n.Dir, "runtime-cache"), n.daemon.Socket, n.daemon.StateDir, "1.1.0"); err != nil {
			return err
		}
	} else if err := os.WriteFile(n.daemon.ConfigFile, []byte(harness.WithoutSelfGC(cfg)), 0o600); err != nil {
		return err
	}
	return n.daemon.Start()
}

// dumpLogs prints the last lines of every node's daemons; with
// CLUSTER_LOGS set to a directory, their whole logs are copied there.
func dumpLogs() {
	keep := os.Getenv("CLUSTER_LOGS")
	for _, n := range nodes {
		if filepath.IsAbs(keep) {
			copyLogs(n, keep)
		}
		for _, name := range []string{"flanneld", "flanneld-hostgw"} {
			if b, err := os.ReadFile(n.LogFile(name)); err == nil {
				fmt.Printf("--- %s %s (last lines)\n%s\n", n.Name, name, tail(string(b), 30))
			}
		}
		if n.daemon != nil {
			fmt.Printf("--- %s rewired (last lines)\n%s\n", n.Name, tail(n.daemon.Log(), 80))
		}
	}
}

func copyLogs(n *node, dir string) {
	_ = os.MkdirAll(dir, 0o755)
	for _, name := range []string{"flanneld", "flanneld-hostgw"} {
		if b, err := os.ReadFile(n.LogFile(name)); err == nil {
			_ = os.WriteFile(filepath.Join(dir, n.Name+"-"+name+".log"), b, 0o644)
		}
	}
	if n.daemon != nil {
		_ = os.WriteFile(filepath.Join(dir, n.Name+"-rewired.log"), []byte(n.daemon.Log()), 0o644)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// createNAD creates a NetworkAttachmentDefinition (config "" : the config
// list of that name in the nodes' conf dir).
func createNAD(t testing.TB, namespace, name, config string) {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]interface{}{"name": name, "namespace": namespace},
		"spec":     map[string]interface{}{"config": config},
	}}
	_, err := c.API.Dynamic.Resource(nad.GVR).Namespace(namespace).Create(context.Background(), u, metav1.CreateOptions{})
	must(t, err)
}

func ensureNamespace(name string) {
	_, _ = c.API.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
