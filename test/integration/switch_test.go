package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vishvananda/netlink"

	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// ptpConf is network B of the live switch: ptp + host-local on the env's
// cluster subnet with its own allocation directory (host-local keeps one per
// network name), accepting requested IPs.
func (e *env) ptpConf(name string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"ptp","ipMasq":false,"capabilities":{"ips":true},
	  "ipam":{"type":"host-local","dataDir":%q,%s}}]}`,
		name, e.ipamDir, e.ranges("", false))
}

// setDefaultNetwork patches the pod's default-network annotation ("" removes it).
func setDefaultNetwork(t testing.TB, p *harness.Pod, value string) {
	t.Helper()
	setAnnotation(t, p, selection.DefaultNetworkAnnotation, value)
}

// waitEvents waits until the pod has n Events with the reason and returns
// their messages.
func waitEvents(t testing.TB, p *harness.Pod, reason string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var msgs []string
	for time.Now().Before(deadline) {
		evs, err := api.Client.CoreV1().Events(p.Namespace).List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + p.Name + ",reason=" + reason})
		must(t, err)
		msgs = msgs[:0]
		for _, ev := range evs.Items {
			msgs = append(msgs, ev.Message)
		}
		if len(msgs) >= n {
			return msgs
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pod %s/%s: %d %s events, want %d: %q", p.Namespace, p.Name, len(msgs), reason, n, msgs)
	return nil
}

// primaryIP is the pod's address from the runtime's ADD result.
func primaryIP(t testing.TB, r interface{}) string {
	t.Helper()
	res, err := current.NewResultFromResult(r.(*current.Result))
	must(t, err)
	if len(res.IPs) == 0 {
		t.Fatal("ADD result has no IP")
	}
	return res.IPs[0].Address.IP.String()
}

// primaryIPs are the pod's addresses from the runtime's ADD result, comma
// separated (one per family).
func primaryIPs(t testing.TB, r interface{}) string {
	t.Helper()
	res, err := current.NewResultFromResult(r.(*current.Result))
	must(t, err)
	var ips []string
	for _, ip := range res.IPs {
		ips = append(ips, ip.Address.IP.String())
	}
	return strings.Join(ips, ",")
}

// traffic is a 1 kHz UDP probe and a TCP stream to the pod from one client.
type traffic struct {
	client *harness.Client
	probe  *harness.Prober
	stream *harness.Stream
}

// startEcho serves UDP and TCP echo on port 7777 inside the pod.
func startEcho(t testing.TB, p *harness.Pod) {
	t.Helper()
	echo, err := harness.StartEcho(p.NetNS, 7777)
	must(t, err)
	t.Cleanup(echo.Close)
}

// startTraffic starts probing the pod at ip from client (closed at
// cleanup; one client may probe several addresses).
func startTraffic(t testing.TB, client *harness.Client, ip string) *traffic {
	t.Helper()
	t.Cleanup(client.Close)
	tr := &traffic{client: client}
	var err error
	target := net.JoinHostPort(ip, "7777")
	tr.stream, err = harness.StartStream(client.NS, target, time.Millisecond)
	must(t, err)
	tr.probe, err = harness.StartProber(client.NS, target, time.Millisecond)
	must(t, err)
	tr.waitFlowing(t)
	return tr
}

// stop ends the traffic and returns what it saw.
func (tr *traffic) stop() (harness.ProbeStats, int, error) {
	stats := tr.probe.Stop()
	n, err := tr.stream.Stop()
	return stats, n, err
}

// far reaches the pod through the host (as from another node); near sits on
// A's bridge next to the pod (as a pod on the same node).
func farClient(t testing.TB, e *env) *harness.Client {
	name := fmt.Sprintf("rwcl%d", e.n)
	sub6 := ""
	if e.family != "4" {
		sub6 = fmt.Sprintf("fd51:%d:", e.n)
	}
	c, err := harness.NewDualClient(name, fmt.Sprintf("10.251.%d", e.n), sub6)
	must(t, err)
	return c
}

func nearClient(t testing.TB, e *env) *harness.Client {
	name := fmt.Sprintf("rwnb%d", e.n)
	cidrs := []string{e.subnet + ".250/24"}
	if e.family != "4" {
		cidrs = append(cidrs, e.subnet6+":250/64")
	}
	c, err := harness.NewBridgeClient(name, e.bridge, cidrs...)
	must(t, err)
	return c
}

// waitFlowing waits until both the probe and the stream get new replies.
func (tr *traffic) waitFlowing(t testing.TB) { tr.wait(t, true) }

// wait waits until the stream, and the probe if asked, get new replies.
func (tr *traffic) wait(t testing.TB, probe bool) {
	t.Helper()
	p0, s0 := tr.probe.Stats().Received, echoed(t, tr.stream)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if (!probe || tr.probe.Stats().Received > p0+20) && echoed(t, tr.stream) > s0+20 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("traffic to the pod is not flowing: probe %s, stream %d echoed", tr.probe.Stats(), echoed(t, tr.stream))
}

func echoed(t testing.TB, s *harness.Stream) int {
	t.Helper()
	n, err := s.Echoed()
	if err != nil {
		t.Fatalf("TCP connection to the pod broke: %v", err)
	}
	return n
}

// assertPrimary waits until the pod's network-status shows network as its
// primary on eth0 with ip (one address per family, comma separated), then
// checks the pod: eth0 holds them, every other interface is a secondary
// network-status shows, the default route of each family goes through eth0,
// no pin is left, the host-local stores of held reserve the addresses (the
// network the pod is on, and every network it left, until its DEL) and
// those of free do not.
func (e *env) assertPrimary(t testing.TB, p *harness.Pod, ip, network string, held, free []string) {
	t.Helper()
	ips := strings.Split(ip, ",")
	deadline := time.Now().Add(15 * time.Second)
	var st []netstatus.Status
	for {
		st = networkStatus(t, p)
		if len(st) > 0 && st[0].Name == network && st[0].Interface == "eth0" && st[0].Default &&
			strings.Join(st[0].IPs, ",") == ip {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("network-status %+v, want %s on eth0 with %s", st, network, ip)
		}
		time.Sleep(20 * time.Millisecond)
	}
	links, err := harness.Links(p.NetNS)
	must(t, err)
	delete(links, "lo")
	if got := links["eth0"].Addrs; len(got) != len(ips) || !hasAddrs(got, ips) {
		t.Fatalf("pod interfaces: %+v, want eth0 with %s", links, ip)
	}
	for _, s := range st[1:] {
		delete(links, s.Interface)
	}
	if delete(links, "eth0"); len(links) > 0 {
		t.Fatalf("pod has interfaces network-status does not show: %v", keys(links))
	}
	for _, a := range ips {
		fam := netlink.FAMILY_V4
		if net.ParseIP(a).To4() == nil {
			fam = netlink.FAMILY_V6
		}
		if dev, err := harness.DefaultRouteDevFamily(p.NetNS, fam); err != nil || dev != "eth0" {
			t.Fatalf("default route for %s via %q (%v), want eth0", a, dev, err)
		}
	}
	if pinned, err := handover.Pinned(p.NetNS.Path()); err != nil || pinned {
		t.Fatalf("pin rule left in the pod (%v)", err)
	}
	for _, a := range ips {
		for _, n := range held {
			if _, err := os.Stat(filepath.Join(e.ipamDir, n, a)); err != nil {
				t.Fatalf("host-local of %s does not hold %s: %v", n, a, err)
			}
		}
		for _, n := range free {
			if _, err := os.Stat(filepath.Join(e.ipamDir, n, a)); !os.IsNotExist(err) {
				t.Fatalf("host-local of %s holds %s (%v)", n, a, err)
			}
		}
	}
}

// hasAddrs reports whether every address of ips is among the CIDRs of addrs.
func hasAddrs(addrs, ips []string) bool {
	for _, ip := range ips {
		found := false
		for _, a := range addrs {
			found = found || strings.HasPrefix(a, ip+"/")
		}
		if !found {
			return false
		}
	}
	return true
}

// macvlanOnBridge is network B': macvlan on the env's master veth, whose
// peer joins A's bridge, so that B' shares A's L2 segment and subnet.
func (e *env) macvlanOnBridge(t testing.TB, name string) string {
	hostDo(t, func() error {
		br, err := netlinksafe.LinkByName(e.bridge)
		if err != nil {
			return err
		}
		peer, err := netlinksafe.LinkByName(e.master + "p")
		if err != nil {
			return err
		}
		return netlink.LinkSetMaster(peer, br)
	})
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"macvlan","master":%q,"mode":"bridge","capabilities":{"ips":true},
	  "ipam":{"type":"host-local","dataDir":%q,%s}}]}`,
		name, e.master, e.ipamDir, e.ranges("", true))
}

func hostDo(t testing.TB, f func() error) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	must(t, f())
}

// switchScenarios are the networks B a pod on A (bridge) switches to.
var switchScenarios = []struct {
	name string
	conf func(t testing.TB, e *env, name string) string
}{
	{"bridge-ptp", func(_ testing.TB, e *env, name string) string { return e.ptpConf(name) }},
	{"bridge-macvlan", func(t testing.TB, e *env, name string) string { return e.macvlanOnBridge(t, name) }},
}

// secondaryConf is a secondary network for a multi-homed pod: macvlan on
// master with host-local on its own subnet (prefix "10.252.3").
func (e *env) secondaryConf(name, master, subnet string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"macvlan","master":%q,"mode":"bridge",
	  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"%s.0/24","rangeStart":"%s.10","rangeEnd":"%s.20"}]]}}]}`,
		name, master, e.ipamDir, subnet, subnet, subnet)
}

// multiHomed creates two secondary networks (net1, net2: macvlan on a
// master of their own, each on its own subnet) and returns the pod
// annotation selecting them and a function that starts traffic to the pod's
// address on each from a neighbour on that segment. Their master is not the
// env's, on which network B' is a macvlan too: adding and deleting a macvlan
// on a shared parent costs its sibling macvlans a packet now and then
// (seen: 1 probe in ~3,700 on a sibling while B' came and went), which is
// the kernel's, not a path the switch touched.
func (e *env) multiHomed(t testing.TB) (map[string]string, func(p *harness.Pod) map[string]*traffic) {
	master := fmt.Sprintf("rwsm%d", e.n)
	hostDo(t, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: master}, PeerName: master + "p"}); err != nil {
			return err
		}
		for _, name := range []string{master, master + "p"} {
			l, err := netlinksafe.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	t.Cleanup(func() { deleteLink(master) })
	e.fixtures = append(e.fixtures, master, master+"p")
	subnets := map[string]string{"net1": fmt.Sprintf("10.252.%d", e.n), "net2": fmt.Sprintf("10.254.%d", e.n)}
	for ifName, subnet := range subnets {
		e.createNAD("default", "sec-"+ifName, e.secondaryConf(fmt.Sprintf("sec-%s-%d", ifName, e.n), master, subnet), nil)
	}
	start := func(p *harness.Pod) map[string]*traffic {
		out := map[string]*traffic{}
		for _, s := range networkStatus(t, p) {
			subnet, ok := subnets[s.Interface]
			if !ok {
				continue
			}
			c, err := harness.NewMacvlanClient(fmt.Sprintf("rw%s%d", s.Interface, e.n), master, subnet+".250/24")
			must(t, err)
			out[s.Interface] = startTraffic(t, c, s.IPs[0])
		}
		if len(out) != len(subnets) {
			t.Fatalf("pod has secondaries %v, want %d", keys(out), len(subnets))
		}
		return out
	}
	return map[string]string{selection.NetworksAnnotation: "sec-net1@net1,sec-net2@net2"}, start
}

// bridgeProxy reads proxy_arp and proxy_ndp of the env's bridge.
func (e *env) bridgeProxy(t testing.TB) string {
	t.Helper()
	read := func(path string) string {
		b, err := os.ReadFile(path)
		must(t, err)
		return strings.TrimSpace(string(b))
	}
	return "proxy_arp=" + read("/proc/sys/net/ipv4/conf/"+e.bridge+"/proxy_arp") +
		" proxy_ndp=" + read("/proc/sys/net/ipv6/conf/"+e.bridge+"/proxy_ndp")
}

// assertSecondaryPaths checks with route lookups inside the pod that a
// neighbour on each secondary's segment (the .250 of multiHomed's subnets)
// is reached through that secondary, and a client off the node (far) not.
func (e *env) assertSecondaryPaths(t testing.TB, p *harness.Pod, when string) {
	t.Helper()
	for dst, want := range map[string]string{
		fmt.Sprintf("10.252.%d.250", e.n): "net1", fmt.Sprintf("10.254.%d.250", e.n): "net2", fmt.Sprintf("10.251.%d.2", e.n): "",
	} {
		var dev string
		must(t, p.NetNS.Do(func(ns.NetNS) error {
			rs, err := netlink.RouteGet(net.ParseIP(dst))
			if err != nil || len(rs) == 0 {
				return fmt.Errorf("route to %s: %v", dst, err)
			}
			l, err := netlink.LinkByIndex(rs[0].LinkIndex)
			if err == nil {
				dev = l.Attrs().Name
			}
			return err
		}))
		switch {
		case want != "" && dev != want:
			t.Fatalf("%s: the pod routes %s through %s, want %s", when, dst, dev, want)
		case want == "" && strings.HasPrefix(dev, "net"):
			t.Fatalf("%s: the pod routes the primary's %s through the secondary %s", when, dst, dev)
		}
	}
}

// TestSwitch moves a running multi-homed pod (two macvlan secondaries) from
// A (bridge) to B and back with traffic flowing from a client through the
// host, from a neighbour on A's bridge and from a neighbour on each
// secondary's segment: the TCP connections must survive, no probe to any
// address may be lost (the switch must not touch the secondaries' paths),
// the pod must end with eth0 holding its IP, every network it was on must
// keep the IP reserved until its DEL, and nothing may leak.
func TestSwitch(t *testing.T) {
	for _, family := range []string{"4", "dual", "6"} {
		for _, tc := range switchScenarios {
			t.Run("ipv"+family+"/"+tc.name, func(t *testing.T) { testSwitch(t, family, tc.conf) })
		}
	}
}

// switchPod makes a node of the family with network B (conf, as
// default/net-b) and a running multi-homed pod on A serving echo, with
// traffic to every primary address from a client through the host and from
// a neighbour on A's bridge, and to each secondary from its segment.
func switchPod(t testing.TB, family string, conf func(t testing.TB, e *env, name string) string) (*env, *harness.Pod, string, map[string]*traffic) {
	e := newEnv(t, envOpts{family: family})
	annotations, secondaryTraffic := e.multiHomed(t)
	p := e.newPod("default", fmt.Sprintf("sw-%d", e.n), annotations)
	r, err := e.rt.Add(context.Background(), p)
	must(t, err)
	ips := primaryIPs(t, r)
	e.createNAD("default", "net-b", conf(t, e, fmt.Sprintf("b-%d", e.n)), nil)
	startEcho(t, p)
	clients := secondaryTraffic(p)
	far, near := farClient(t, e), nearClient(t, e)
	for _, ip := range strings.Split(ips, ",") {
		clients["eth0 "+ip+" through the host"] = startTraffic(t, far, ip)
		clients["eth0 "+ip+" on A's bridge"] = startTraffic(t, near, ip)
	}
	return e, p, ips, clients
}

func testSwitch(t *testing.T, family string, conf func(t testing.TB, e *env, name string) string) {
	e, p, ips, clients := switchPod(t, family, conf)
	cluster, b := fmt.Sprintf("cluster-%d", e.n), fmt.Sprintf("b-%d", e.n)
	ctx := context.Background()
	flowing := func() {
		for _, tr := range clients {
			tr.waitFlowing(t)
		}
	}

	proxyBefore := e.bridgeProxy(t)
	from := time.Now()
	setDefaultNetwork(t, p, "net-b")
	t.Logf("A->B: %s", waitEvents(t, p, "NetworkSwitched", 1)[0])
	e.assertPrimary(t, p, ips, "default/net-b", []string{b, cluster}, nil)
	flowing()
	t.Logf("proxy ARP / NDP on A's bridge while the pod is on B: %s", e.bridgeProxy(t))
	must(t, e.rt.Check(ctx, p))
	// GC with the pod valid keeps B's allocation (keyed by its CNI
	// name) and A's reservation.
	must(t, e.rt.GC(ctx, p))
	e.assertPrimary(t, p, ips, "default/net-b", []string{b, cluster}, nil)

	setDefaultNetwork(t, p, "")
	t.Logf("B->A: %s", waitEvents(t, p, "NetworkSwitched", 2)[1])
	e.assertPrimary(t, p, ips, cluster, []string{cluster, b}, nil)
	flowing()
	must(t, e.rt.Check(ctx, p))
	// Back on the bridge: what the switch turned on there is undone.
	if got := e.bridgeProxy(t); got != proxyBefore {
		t.Errorf("proxy ARP / NDP on A's bridge after the switch back: %s, before the switches: %s", got, proxyBefore)
	}

	stopClients(t, clients, from)
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// assertOnA checks that a refused or undone switch left the pod as it was:
// eth0 on the cluster network holding ip, nothing of B (B's store does not
// hold ip), no pin.
func (e *env) assertOnA(t testing.TB, p *harness.Pod, ip, b string) {
	t.Helper()
	e.assertPrimary(t, p, ip, fmt.Sprintf("cluster-%d", e.n), []string{fmt.Sprintf("cluster-%d", e.n)}, []string{b})
}

// A switch that cannot be done leaves the pod untouched and says why.
func TestSwitchRefused(t *testing.T) {
	for _, tc := range []struct {
		name, config, annotation, reason, msg string
		nad                                   func(e *env, name string) string
	}{
		{name: "no-ips-capability", annotation: "net-b", reason: "SwitchRejected", msg: `declares the "ips" capability`,
			nad: func(e *env, name string) string {
				return strings.Replace(e.ptpConf(name), `"capabilities":{"ips":true},`, "", 1)
			}},
		{name: "outside-b-range", annotation: "net-b", reason: "SwitchRejected", msg: "do not contain it",
			nad: func(e *env, name string) string {
				return strings.Replace(e.ptpConf(name), e.subnet+".0/24", fmt.Sprintf("10.252.%d.0/24", e.n), 1)
			}},
		{name: "b-add-fails", annotation: "net-b", reason: "SwitchFailed", msg: "the pod stays on its primary network",
			nad: func(e *env, name string) string { // the subnet holds X, the allocatable range does not
				return strings.Replace(e.ptpConf(name), e.subnet+`.0/24"`, e.subnet+`.0/24","rangeStart":"`+e.subnet+`.100"`, 1)
			}},
		{name: "namespace-isolation", config: "namespaceIsolation: true\n", annotation: "other/net-b", reason: "SwitchRejected",
			msg: "namespace isolation", nad: func(e *env, name string) string { return e.ptpConf(name) }},
		{name: "unknown-network", annotation: "nope", reason: "SwitchRejected", msg: "not found",
			nad: func(e *env, name string) string { return e.ptpConf(name) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{extraConfig: tc.config})
			b := fmt.Sprintf("b-%d", e.n)
			ns, _, _ := strings.Cut(tc.annotation, "/")
			if !strings.Contains(tc.annotation, "/") {
				ns = "default"
			}
			e.createNAD(ns, "net-b", tc.nad(e, b), nil)
			p := e.newPod("default", "refused-"+tc.name, nil)
			r, err := e.rt.Add(context.Background(), p)
			must(t, err)
			ip := primaryIP(t, r)
			setDefaultNetwork(t, p, tc.annotation)
			if msg := waitEvents(t, p, tc.reason, 1)[0]; !strings.Contains(msg, tc.msg) {
				t.Fatalf("%s event %q does not say %q", tc.reason, msg, tc.msg)
			}
			e.assertOnA(t, p, ip, b)
			must(t, e.rt.Check(context.Background(), p))
			must(t, e.rt.Del(context.Background(), p))
			e.assertNoLeaks()
		})
	}
}

// A crash (SIGKILL) or a failure at every step of a switch. A failure before
// the new network is in place leaves the pod on A; after it, on B. A crash
// is recovered at restart and the switch, still wanted by the annotation, is
// done again. Either way the pod ends on exactly one working primary and
// nothing leaks after DEL.
//
// The pod is multi-homed: at every step, and where the daemon died, route
// lookups in the pod for a neighbour on each secondary's segment answer
// that secondary's interface (a switch pins only the primary's paths).
func TestFaultsDuringSwitch(t *testing.T) {
	e := newEnv(t, envOpts{})
	cluster, b := fmt.Sprintf("cluster-%d", e.n), fmt.Sprintf("b-%d", e.n)
	e.createNAD("default", "net-b", e.ptpConf(b), nil)
	annotations, _ := e.multiHomed(t)
	steps := []struct {
		step      string
		committed bool // the new primary is in place when the step runs
	}{
		{"switch:pin", false}, {"add:before:rwsw0", false}, {"add:after:rwsw0", false},
		{"switch:cut", true}, {"switch:cut-over", true}, {"del:before:eth0", true}, {"del:after:eth0", true},
		{"switch:renaming", true},
	}
	for i, s := range steps {
		for _, action := range actions {
			t.Run(s.step+"="+action, func(t *testing.T) {
				p := e.newPod("default", fmt.Sprintf("sf-%d-%s", i, action), annotations)
				e.restart(t, "")
				r, err := e.rt.Add(context.Background(), p)
				must(t, err)
				ip := primaryIP(t, r)
				dad := podSysctl(t, p, acceptDAD)
				e.restart(t, s.step+"="+action)
				setDefaultNetwork(t, p, "net-b")
				switch {
				case action == "kill":
					waitDead(t, e.daemon)
					e.assertSecondaryPaths(t, p, "with the daemon dead at "+s.step)
					e.restart(t, "")
					e.assertPrimary(t, p, ip, "default/net-b", []string{b, cluster}, nil)
				case s.committed: // retried until finished
					e.assertPrimary(t, p, ip, "default/net-b", []string{b, cluster}, nil)
				default:
					waitEvents(t, p, "SwitchFailed", 1)
					e.assertOnA(t, p, ip, b)
				}
				e.assertSecondaryPaths(t, p, "after "+s.step+"="+action)
				if v := podSysctl(t, p, acceptDAD); v != dad {
					t.Errorf("the pod's %s is %s after %s, was %s", acceptDAD, v, s.step+"="+action, dad)
				}
				must(t, e.rt.Check(context.Background(), p))
				must(t, e.rt.Del(context.Background(), p))
				e.assertNoLeaks()
			})
		}
	}
}

// acceptDAD makes new interfaces run duplicate address detection (a switch
// turns it off in the pod while B is added).
const acceptDAD = "ipv6/conf/default/accept_dad"

// readdressConf is a network that cannot own the pod's IP: ptp on its own
// subnet, no "ips" capability.
func (e *env) readdressConf(name string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[{"type":"ptp","ipMasq":false,
	  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.253.%d.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`,
		name, e.ipamDir, e.n)
}

// sourceSeen dials from the pod to a listener in the client and returns the
// source address the client saw: the address new connections use.
func sourceSeen(t testing.TB, p *harness.Pod, c *harness.Client, clientIP string) string {
	t.Helper()
	var ln net.Listener
	must(t, c.NS.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", clientIP+":0")
		return err
	}))
	defer ln.Close()
	var conn net.Conn
	must(t, p.NetNS.Do(func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	}))
	defer conn.Close()
	peer, err := ln.Accept()
	must(t, err)
	defer peer.Close()
	host, _, _ := net.SplitHostPort(peer.RemoteAddr().String())
	return host
}

// The re-addressing switch: B cannot own the pod's IP X, so the pod gets a
// new IP Y from B. Connections on X keep flowing through A while new ones
// use B; A goes once no connection uses X (or at the drain timeout), and
// network-status shows both meanwhile.
func TestSwitchReaddress(t *testing.T) {
	for _, tc := range []struct {
		name        string
		config      string
		closeStream bool // end the connection on X (else the drain timeout ends it)
		restart     bool // restart the daemon while draining
	}{
		{"drained", "", true, false},
		{"drain-timeout", "switchDrainTimeout: 4s\n", false, false},
		{"restart-while-draining", "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{extraConfig: tc.config})
			cluster, r := fmt.Sprintf("cluster-%d", e.n), fmt.Sprintf("r-%d", e.n)
			e.createNAD("default", "net-r", e.readdressConf(r), nil)
			p := e.newPod("default", "readdress-"+tc.name, map[string]string{selection.SwitchModeAnnotation: "readdress"})
			ctx := context.Background()
			res, err := e.rt.Add(ctx, p)
			must(t, err)
			x := primaryIP(t, res)
			startEcho(t, p)
			client := farClient(t, e)
			onX := startTraffic(t, client, x)

			setDefaultNetwork(t, p, "net-r")
			t.Logf("draining: %s", waitEvents(t, p, "SwitchDraining", 1)[0])
			st := networkStatus(t, p)
			for deadline := time.Now().Add(10 * time.Second); len(st) != 2 && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				st = networkStatus(t, p)
			}
			if len(st) != 2 || st[0].Name != "default/net-r" || !st[0].Default || st[1].Name != cluster || st[1].Default ||
				st[1].Interface != "eth0" || st[1].IPs[0] != x {
				t.Fatalf("network-status while draining: %+v", st)
			}
			y := st[0].IPs[0]
			if !strings.HasPrefix(y, fmt.Sprintf("10.253.%d.", e.n)) {
				t.Fatalf("new address %s is not from B", y)
			}
			if got := sourceSeen(t, p, client, fmt.Sprintf("10.251.%d.2", e.n)); got != y {
				t.Fatalf("a new connection from the pod comes from %s, want %s", got, y)
			}
			// The old connection still works through A. (UDP on X does not: a
			// server bound to the wildcard address answers from the address
			// the route picks, Y; see docs/live-switch.md.)
			onX.wait(t, false)
			onY, err := harness.StartStream(client.NS, y+":7777", time.Millisecond)
			must(t, err)
			if tc.restart {
				e.restart(t, "")
				onX.wait(t, false)
			}
			if tc.closeStream {
				_, _ = onX.stream.Stop()
			}
			t.Logf("done: %s", waitEvents(t, p, "NetworkSwitched", 1)[0])
			e.assertPrimary(t, p, y, "default/net-r", []string{r}, []string{cluster})
			// status.podIPs still names X: A keeps it reserved until the pod's DEL.
			if _, err := os.Stat(filepath.Join(e.ipamDir, cluster, x)); err != nil {
				t.Fatalf("A released %s after the drain while the pod's status still names it: %v", x, err)
			}
			if n, err := onY.Stop(); err != nil || n == 0 {
				t.Fatalf("connection on the new address: %d echoed, %v", n, err)
			}
			if !tc.closeStream {
				_, _ = onX.stream.Stop()
			}
			onX.probe.Stop()
			client.Close()
			must(t, e.rt.Del(ctx, p))
			e.assertNoLeaks()
		})
	}
}

// stopClients stops the traffic of every client after the switches begun
// at from. Each TCP stream must have survived; no probe sent from then on may
// be lost, on any interface or family; and a client on a secondary's segment
// may have lost none at all (the switch never touches a secondary's path).
// All traffic stops before any client goes: a client carries the probes of
// both families (far, near), and deleting a macvlan client costs its
// siblings on the same master a packet now and then.
func stopClients(t testing.TB, clients map[string]*traffic, from time.Time) {
	t.Helper()
	to := time.Now()
	for _, name := range sortedKeys(clients) {
		tr := clients[name]
		whole, n, err := tr.stop()
		during := tr.probe.Window(from, to)
		t.Logf("client %s, 1 kHz UDP probe: %s; from the first switch on: %s; TCP: %d messages echoed", name, whole, during, n)
		if err != nil {
			t.Errorf("client %s: TCP connection did not survive: %v", name, err)
		}
		lost := during
		if strings.HasPrefix(name, "net") {
			lost = whole
		}
		if lost.Lost() > 0 {
			t.Errorf("client %s lost %d probes, sent %s after the first switch began", name, lost.Lost(), sinceAll(from, lost.LostAt))
		}
	}
	for _, tr := range clients {
		tr.client.Close()
	}
}

// sinceAll formats the first ten times of at as offsets from from.
func sinceAll(from time.Time, at []time.Time) string {
	var out []string
	for _, a := range at[:min(len(at), 10)] {
		out = append(out, fmt.Sprintf("%.1f ms", float64(a.Sub(from).Microseconds())/1000))
	}
	if len(at) > 10 {
		out = append(out, "...")
	}
	return strings.Join(out, ", ")
}
