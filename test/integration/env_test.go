package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/test/harness"
)

// Shared by all tests of the package (see TestMain).
var (
	api             *harness.APIServer
	tools           string
	binDir          string
	whereaboutsConf string
	seq             atomic.Int32
)

// skipRootTests is the environment variable that skips the package on
// purpose when not root; without it, not being root fails the run.
const skipRootTests = "REWIRE_SKIP_ROOT_TESTS"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv(skipRootTests) == "1" {
			fmt.Printf("integration tests need root (network namespaces); skipped: %s=1\n", skipRootTests)
			return 0
		}
		fmt.Printf("FAIL: integration tests need root (network namespaces, links): run them as root, "+
			"or set %s=1 to skip them on purpose\n", skipRootTests)
		return 1
	}
	root, _ := filepath.Abs("../..")
	var err error
	if tools, err = harness.ToolsDir(root); err != nil {
		fmt.Println(err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "rewire-it-")
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
	api, err = harness.StartAPIServer(tools, filepath.Join(tmp, "api"),
		filepath.Join(root, "deploy/crds/network-attachment-definitions.yaml"), filepath.Join(root, "deploy/crds/networkmigrations.yaml"),
		filepath.Join(tools, "whereabouts-crd-ippools.yaml"), filepath.Join(tools, "whereabouts-crd-overlappingrangeipreservations.yaml"))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	// whereabouts reads its datastore settings from a flat file.
	whereaboutsConf = filepath.Join(tmp, "whereabouts.conf")
	if err := os.WriteFile(whereaboutsConf, []byte(fmt.Sprintf(`{"datastore":"kubernetes","kubernetes":{"kubeconfig":%q}}`, api.Kubeconfig)), 0o600); err != nil {
		fmt.Println(err)
		return 1
	}
	defer api.Stop()
	fmt.Printf("etcd + kube-apiserver ready in %s\n", time.Since(start).Round(time.Millisecond))
	for _, ns := range []string{"other", "isolated", "rw-system"} {
		_, _ = api.Client.CoreV1().Namespaces().Create(context.Background(),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	}
	return m.Run()
}

// env is one test's node: a cluster network (bridge + host-local), a
// macvlan master, a rewired daemon and a runtime stand-in.
type env struct {
	t       testing.TB
	n       int
	dir     string
	node    string
	bridge  string
	master  string
	subnet  string // cluster network /24 prefix, e.g. "10.250.3"
	subnet6 string // cluster network /64 prefix, e.g. "fd50:3:" (families 6 and dual)
	family  string // "4" (default), "6" or "dual": the pod networks' address families
	ipamDir string
	daemon  *harness.Daemon
	rt      *harness.Runtime
	before  harness.Snapshot
	// fixtures are host links a test made for the env after its start
	// (they stay until its cleanup; the leak check leaves them out).
	fixtures []string
	netns    netnsList // the pods' network namespaces (see scope)
}

type envOpts struct {
	extraConfig string // appended to the daemon config YAML
	kubeconfig  string // the daemon's credentials (default: admin)
	cniVersion  string // runtime's CNI version
	noStart     bool
	// clusterRange limits the cluster network's host-local range to
	// .first-.last of its /24 (default: the whole /24).
	clusterRange [2]int
	// family of the pod networks: "4" (default), "6" or "dual".
	family string
	// node is the node's name (default "node-N").
	node string
	// clusterIPAM is the cluster network's IPAM: "host-local" (default) or
	// "whereabouts" (one cluster-wide pool for the env's subnet).
	clusterIPAM string
	// binDir is searched for plugins before the reference plugins.
	binDir string
	// pidNamespace: rewired runs as PID 1 of its own PID namespace, as in
	// its container.
	pidNamespace bool
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	n := claimEnv(t)
	e := &env{
		t: t, n: n, dir: t.TempDir(), node: fmt.Sprintf("node-%d", n),
		bridge: fmt.Sprintf("rwbr%d", n), master: fmt.Sprintf("rwm%d", n), subnet: fmt.Sprintf("10.250.%d", n),
	}
	e.ipamDir = filepath.Join(e.dir, "ipam")
	if o.node != "" {
		e.node = o.node
	}
	e.family = o.family
	if e.family == "" {
		e.family = "4"
	}
	if e.family != "4" {
		e.subnet6 = fmt.Sprintf("fd50:%d:", n)
	}
	confDir := filepath.Join(e.dir, "net.d")
	must(t, os.MkdirAll(confDir, 0o755))
	cluster := e.clusterConf(o.clusterRange)
	if o.clusterIPAM == "whereabouts" {
		cluster = e.clusterConfIPAM(e.whereaboutsIPAM())
	}
	must(t, os.WriteFile(filepath.Join(confDir, "10-cluster.conflist"), []byte(cluster), 0o644))
	binDirs := tools
	if o.binDir != "" {
		binDirs = o.binDir + ", " + tools
	}
	cfg := fmt.Sprintf("clusterNetwork: %s\nconfDir: %s\nbinDirs: [%s]\ndeviceInfoDir: %s\ncniDir: %s\n%s",
		confDir, confDir, binDirs, filepath.Join(e.dir, "devinfo"), e.multusDir(), o.extraConfig)
	var err error
	if o.kubeconfig == "" {
		o.kubeconfig = api.Kubeconfig
	}
	e.daemon, err = harness.NewDaemon(filepath.Join(binDir, "rewired"), filepath.Join(e.dir, "daemon"), o.kubeconfig, e.node, cfg)
	must(t, err)
	e.daemon.PIDNamespace = o.pidNamespace
	if o.cniVersion == "" {
		o.cniVersion = "1.1.0"
	}
	e.rt, err = harness.NewRuntime([]string{binDir, tools}, filepath.Join(e.dir, "runtime-cache"), e.daemon.Socket, e.daemon.StateDir, o.cniVersion)
	must(t, err)
	e.before, err = e.snapshot()
	must(t, err)
	t.Cleanup(e.cleanup)
	if !o.noStart {
		must(t, e.daemon.Start())
	}
	return e
}

// watched are the directories whose files must not leak.
func (e *env) watched() []string {
	return []string{e.ipamDir, filepath.Join(e.daemon.StateDir, "sandboxes"), filepath.Join(e.daemon.StateDir, "cache"),
		filepath.Join(e.dir, "runtime-cache"), filepath.Join(e.dir, "devinfo", "cni")}
}

func (e *env) clusterConf(limit [2]int) string {
	rng := ""
	if limit[0] > 0 {
		rng = fmt.Sprintf(`,"rangeStart":"%s.%d","rangeEnd":"%s.%d"`, e.subnet, limit[0], e.subnet, limit[1])
	}
	return e.clusterConfIPAM(fmt.Sprintf(`{"type":"host-local","dataDir":%q,%s}`, e.ipamDir, e.ranges(rng, false)))
}

// clusterConfIPAM is the cluster network (bridge + portmap) with an IPAM.
func (e *env) clusterConfIPAM(ipam string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cluster-%d","plugins":[
	  {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":false,"capabilities":{"ips":true},"ipam":%s},
	  {"type":"portmap","capabilities":{"portMappings":true},"snat":false}]}`,
		e.n, e.bridge, ipam)
}

// whereaboutsIPAM is a whereabouts IPAM section for the env's IPv4 subnet:
// every network using it shares one cluster-wide pool (.2 to .254).
func (e *env) whereaboutsIPAM() string {
	return fmt.Sprintf(`{"type":"whereabouts","range":"%s.0/24","range_start":"%s.2","gateway":"%s.1","routes":[{"dst":"0.0.0.0/0"}],
	  "configuration_path":%q,"kubernetes":{"kubeconfig":%q},"log_file":%q}`,
		e.subnet, e.subnet, e.subnet, whereaboutsConf, api.Kubeconfig, filepath.Join(e.dir, "whereabouts.log"))
}

// ranges is the host-local "ranges" and "routes" of a pod network on the
// env's subnets of its families (extra is added to the IPv4 range, gateway
// sets the .1 gateways).
func (e *env) ranges(extra string, gateway bool) string {
	var sets, routes []string
	gw4, gw6 := "", ""
	if gateway {
		gw4, gw6 = fmt.Sprintf(`,"gateway":"%s.1"`, e.subnet), fmt.Sprintf(`,"gateway":"%s:1"`, e.subnet6)
	}
	if e.family != "6" {
		sets = append(sets, fmt.Sprintf(`[{"subnet":"%s.0/24"%s%s}]`, e.subnet, extra, gw4))
		routes = append(routes, `{"dst":"0.0.0.0/0"}`)
	}
	if e.family != "4" {
		sets = append(sets, fmt.Sprintf(`[{"subnet":"%s:/64"%s}]`, e.subnet6, gw6))
		routes = append(routes, `{"dst":"::/0"}`)
	}
	return fmt.Sprintf(`"ranges":[%s],"routes":[%s]`, strings.Join(sets, ","), strings.Join(routes, ","))
}

// claimEnv picks the env's number n and creates its macvlan master rwm<n>,
// a veth pair whose first end serves as master (this kernel has no dummy
// links). Creating the link is the claim: a number whose master exists
// already (another run of the package on this machine, or one killed
// before its cleanup) is skipped, so that no two envs share names and
// subnets (10.25x.<n>.0/24).
func claimEnv(t testing.TB) int {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		n := int(seq.Add(1))
		if n > 255 {
			t.Fatal("no free env number up to 255: their masters rwm<n> exist (left by killed test runs? ip link del them)")
		}
		master := fmt.Sprintf("rwm%d", n)
		err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: master}, PeerName: master + "p"})
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		must(t, err)
		t.Cleanup(func() { deleteLink(master) })
		for _, name := range []string{master, master + "p"} {
			l, err := netlinksafe.LinkByName(name)
			must(t, err)
			must(t, netlink.LinkSetUp(l))
		}
		return n
	}
}

func (e *env) cleanup() {
	e.daemon.Stop()
	if strings.Contains(e.daemon.Log(), "WARNING: DATA RACE") {
		e.t.Errorf("data race in rewired:\n%s", e.daemon.Log())
	}
	if e.t.Failed() {
		e.t.Logf("rewired log:\n%s", tail(e.daemon.Log(), 60))
		if dir := os.Getenv("REWIRE_KEEP_LOGS"); dir != "" { // the whole log, for a closer look
			_ = os.WriteFile(filepath.Join(dir, e.node+"-rewired.log"), []byte(e.daemon.Log()), 0o644)
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, name := range []string{e.master, e.bridge} {
		if l, err := netlinksafe.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// assertNoLeaks compares what the env made on the host (its scope: links,
// addresses, routes and rules, and the files of the watched directories)
// with the state before the test. Bridges the bridge plugin created are
// expected to stay (it never deletes them); name them in bridges.
func (e *env) assertNoLeaks(bridges ...string) {
	e.t.Helper()
	if d := e.leaks(bridges...); d != "" {
		e.t.Errorf("leaks after DEL:\n%s", d)
	}
}

// createNAD creates a NetworkAttachmentDefinition.
func (e *env) createNAD(namespace, name, config string, annotations map[string]string) {
	e.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]interface{}{"name": name, "namespace": namespace},
		"spec":     map[string]interface{}{"config": config},
	}}
	u.SetAnnotations(annotations)
	_, err := api.Dynamic.Resource(nad.GVR).Namespace(namespace).Create(context.Background(), u, metav1.CreateOptions{})
	must(e.t, err)
	e.t.Cleanup(func() {
		_ = api.Dynamic.Resource(nad.GVR).Namespace(namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// macvlanConf is the seed document's macvlan-conf on this env's master,
// with host-local state in the env's IPAM dir.
func (e *env) macvlanConf(name, subnet string) string {
	return e.macvlanRange(name, subnet, 200, 216)
}

// macvlanRange is macvlanConf with the range .first-.last.
func (e *env) macvlanRange(name, subnet string, first, last int) string {
	return fmt.Sprintf(`{"cniVersion":"0.3.0","name":%q,"type":"macvlan","master":%q,"mode":"bridge",
	  "ipam":{"type":"host-local","dataDir":%q,"subnet":"%s.0/24","rangeStart":"%s.%d","rangeEnd":"%s.%d",
	  "routes":[{"dst":"0.0.0.0/0"}],"gateway":"%s.1"}}`, name, e.master, e.ipamDir, subnet, subnet, first, subnet, last, subnet)
}

// newPod creates the pod object bound to this env's node and a netns.
func (e *env) newPod(namespace, name string, annotations map[string]string) *harness.Pod {
	e.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	created, err := api.Client.CoreV1().Pods(namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	must(e.t, err)
	netns, err := testutils.NewNS()
	must(e.t, err)
	e.netns.add(netns)
	hp := &harness.Pod{Namespace: namespace, Name: name, UID: string(created.UID),
		ContainerID: fmt.Sprintf("c%d-%d-%s", os.Getpid(), e.n, name), NetNS: netns}
	e.t.Cleanup(func() {
		if e.t.Failed() && e.daemon.Running() {
			// Leave nothing behind for the next test: the netns may outlive
			// this test (orphaned sockets hold it) with its host-side links.
			_ = e.rt.Del(context.Background(), hp)
		}
		_ = netns.Close()
		_ = testutils.UnmountNS(netns)
		_ = api.Client.CoreV1().Pods(namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return hp
}

// networkStatus waits for the pod's network-status annotation.
func networkStatus(t testing.TB, p *harness.Pod) []netstatus.Status {
	t.Helper()
	var last string
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		pod, err := api.Client.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
		must(t, err)
		if last = pod.Annotations[netstatus.Annotation]; last != "" {
			var list []netstatus.Status
			must(t, json.Unmarshal([]byte(last), &list))
			return list
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pod %s/%s never got a network-status annotation", p.Namespace, p.Name)
	return nil
}

// waitEvent waits for an Event on the pod with the given reason and returns
// its message.
func waitEvent(t testing.TB, p *harness.Pod, reason string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := api.Client.CoreV1().Events(p.Namespace).List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + p.Name + ",reason=" + reason})
		must(t, err)
		if len(evs.Items) > 0 {
			return evs.Items[0].Message
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s event on pod %s/%s", reason, p.Namespace, p.Name)
	return ""
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func podLinks(t testing.TB, p *harness.Pod) (map[string]harness.Link, error) {
	t.Helper()
	return harness.Links(p.NetNS)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func itoa(n int) string { return fmt.Sprint(n) }

func deleteLink(name string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if l, err := netlinksafe.LinkByName(name); err == nil {
		_ = netlink.LinkDel(l)
	}
}

type harnessPod = harness.Pod

// allocations lists the IPs host-local holds in this env's IPAM dir.
func (e *env) allocations() []string {
	s, err := harness.TakeSnapshot(e.ipamDir)
	must(e.t, err)
	return s.Files
}

// writeConfig replaces the daemon config (before Start).
func writeConfig(e *env, cfg string) error {
	return os.WriteFile(e.daemon.ConfigFile, []byte(harness.WithoutSelfGC(cfg)), 0o600)
}
