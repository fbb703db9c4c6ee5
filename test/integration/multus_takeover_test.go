package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/multuscache"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// multusDir is the env's Multus cniDir (the daemon's cniDir).
func (e *env) multusDir() string { return filepath.Join(e.dir, "multus") }

// multusAdd networks a pod as Multus's CmdAdd does (pkg/multus/multus.go):
// the delegates are saved first (saveDelegates), then each runs through
// libcni with Multus's cniDir as libcni's cache dir (conflistAdd or confAdd,
// by whether the delegate is a list), named by getIfname, with the
// CNI_ARGS of createRuntimeConf (pkg/types/conf.go); the network-status
// Multus then writes is put on the pod. nets are the NADs (namespace/name)
// of the pod's annotation, in order, with their configs.
func (e *env) multusAdd(t *testing.T, p *harness.Pod, nets [][2]string) {
	t.Helper()
	cluster, err := os.ReadFile(filepath.Join(e.dir, "net.d", "10-cluster.conflist"))
	must(t, err)
	master, err := multuscache.NewDelegate(cluster, "")
	must(t, err)
	master.MasterPlugin = true
	delegates := []*multuscache.DelegateNetConf{master}
	for _, n := range nets {
		d, err := multuscache.NewDelegate([]byte(n[1]), n[0])
		must(t, err)
		delegates = append(delegates, d)
	}
	must(t, multuscache.WriteDelegates(e.multusDir(), p.ContainerID, delegates))
	cni := libcni.NewCNIConfigWithCacheDir([]string{tools}, e.multusDir(), harness.PluginExec())
	var status []netstatus.Status
	for idx, d := range delegates {
		ifName := multuscache.IfName(d, "eth0", idx)
		rt := &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.NetNS.Path(), IfName: ifName,
			Args: [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
				{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID}, {"K8S_POD_UID", p.UID}}}
		var r types.Result
		if d.ConfListPlugin {
			list, err := libcni.ConfListFromBytes(d.Bytes)
			must(t, err)
			r, err = cni.AddNetworkList(context.Background(), list, rt)
			must(t, err)
		} else {
			conf, err := libcni.ConfFromBytes(d.Bytes)
			must(t, err)
			r, err = cni.AddNetwork(context.Background(), conf, rt)
			must(t, err)
		}
		res, err := current.NewResultFromResult(r)
		must(t, err)
		status = append(status, netstatus.FromResult(d.Name, ifName, d.MasterPlugin, res))
	}
	value, err := netstatus.Marshal(status)
	must(t, err)
	setAnnotation(t, p, netstatus.Annotation, value)
}

// multusFiles lists what is left in the env's Multus cniDir.
func (e *env) multusFiles(t *testing.T) []string {
	t.Helper()
	s, err := harness.TakeSnapshot(e.multusDir())
	must(t, err)
	return s.Files
}

// Pods Multus networked (a cluster network and two macvlan attachments,
// one a single config, one a list) are taken over by a rewired started
// afterwards: one is deleted with every attachment released and Multus's
// files removed; the other is adopted, gets a third network hot-plugged
// and one unplugged without its other interfaces being re-plugged, then is
// deleted. Nothing leaks.
func TestMultusTakeover(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	mv1 := e.macvlanConf("mv1", "192.168.71")
	mv2 := `{"cniVersion":"0.4.0","name":"mv2","plugins":[` + strings.Replace(e.macvlanConf("mv2", "192.168.72"),
		`"cniVersion":"0.3.0","name":"mv2",`, "", 1) + `]}`
	e.createNAD("default", "mv1", mv1, nil)
	e.createNAD("default", "mv2", mv2, nil)
	e.createNAD("default", "mv3", e.macvlanConf("mv3", "192.168.73"), nil)
	nets := [][2]string{{"default/mv1", mv1}, {"default/mv2", mv2}}
	ctx := context.Background()

	gone := e.newPod("default", "multus-del", map[string]string{selection.NetworksAnnotation: "mv1,mv2"})
	kept := e.newPod("default", "multus-adopt", map[string]string{selection.NetworksAnnotation: "mv1,mv2"})
	e.multusAdd(t, gone, nets)
	e.multusAdd(t, kept, nets)
	before, err := podLinks(t, kept)
	must(t, err)
	for _, name := range []string{"eth0", "net1", "net2"} {
		if len(before[name].Addrs) != 1 {
			t.Fatalf("Multus's pod: %s = %+v", name, before[name])
		}
	}
	if got := len(e.multusFiles(t)); got != 8 { // 2 delegates files, 3 libcni cache files each
		t.Fatalf("Multus's state: %d files, want 8: %v", got, e.multusFiles(t))
	}
	must(t, e.daemon.Start())

	// DEL of a pod Multus made: every attachment released, Multus's files gone.
	must(t, e.rt.Del(ctx, gone))
	if links, _ := podLinks(t, gone); len(links) != 0 {
		t.Errorf("interfaces left after DEL: %v", keys(links))
	}
	for _, f := range e.multusFiles(t) {
		if strings.Contains(f, gone.ContainerID) {
			t.Errorf("Multus's file left after DEL: %s", f)
		}
	}
	must(t, e.rt.Del(ctx, gone)) // DEL is idempotent

	// The adopted pod: its current annotation is what it has (nothing is
	// re-plugged), a third network is plugged, then one is unplugged.
	rv := patchAnnotation(t, kept, selection.NetworksAnnotation, "mv1,mv2,mv3")
	e.waitReconciled(t, kept, rv)
	links := waitLinks(t, kept, "net3 on mv3", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.73.")(l["net3"]) })
	for _, name := range []string{"eth0", "net1", "net2"} {
		if l := links[name]; l.MAC != before[name].MAC || !slices.Equal(l.Addrs, before[name].Addrs) {
			t.Errorf("%s changed by the hot-plug: %+v, was %+v", name, l, before[name])
		}
	}
	if got := statusNames(t, kept, 4); got != fmt.Sprintf("cluster-%d@eth0 default/mv1@net1 default/mv2@net2 default/mv3@net3", e.n) {
		t.Errorf("network-status = %s", got)
	}
	rv = patchAnnotation(t, kept, selection.NetworksAnnotation, "mv1,mv3")
	e.waitReconciled(t, kept, rv)
	links = waitLinks(t, kept, "net2 unplugged", func(l map[string]harness.Link) bool { _, ok := l["net2"]; return !ok })
	if l := links["net1"]; l.MAC != before["net1"].MAC || len(links) != 3 {
		t.Errorf("after the unplug: %+v", links)
	}
	if ips := e.allocations(); slices.ContainsFunc(ips, func(f string) bool { return strings.Contains(f, "192.168.72.") }) {
		t.Errorf("mv2's address still allocated after the unplug: %v", ips)
	}
	must(t, e.rt.Check(ctx, kept))
	must(t, e.rt.Del(ctx, kept))
	if links, _ := podLinks(t, kept); len(links) != 0 {
		t.Errorf("interfaces left after DEL: %v", keys(links))
	}
	if files := e.multusFiles(t); len(files) != 0 {
		t.Errorf("Multus's files left: %v", files)
	}
	e.assertNoLeaks()
}

// macvlanSingle is secondaryConf as a single config (not a list), in the
// CNI version of Multus's quick-start NADs.
func (e *env) macvlanSingle(name, master, subnet string) string {
	return fmt.Sprintf(`{"cniVersion":"0.3.1","name":%q,"type":"macvlan","master":%q,"mode":"bridge",
	  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"%s.0/24","rangeStart":"%s.10","rangeEnd":"%s.20"}]]}}`,
		name, master, e.ipamDir, subnet, subnet, subnet)
}

// A pod Multus networked (the cluster network and two macvlan attachments,
// one a single config, one a list) and adopted by a rewired started
// afterwards switches its primary to another network (ptp) keeping its IP,
// then back, as pods Rewire created do: traffic to eth0 from a client
// through the host and from a neighbour on the cluster bridge keeps its TCP
// connections, the neighbours on the secondaries' segments lose nothing,
// and each network the pod was on holds the IP until its DEL. A network is
// then hot-plugged and unplugged, and the DEL leaves nothing behind.
func TestMultusTakeoverSwitch(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	cluster, b := fmt.Sprintf("cluster-%d", e.n), fmt.Sprintf("b-%d", e.n)
	sub1, sub2 := fmt.Sprintf("10.252.%d", e.n), fmt.Sprintf("10.254.%d", e.n)
	mv1 := e.macvlanSingle(fmt.Sprintf("mv1-%d", e.n), e.master, sub1)
	mv2 := e.secondaryConf(fmt.Sprintf("mv2-%d", e.n), e.master, sub2)
	e.createNAD("default", "mv1", mv1, nil)
	e.createNAD("default", "mv2", mv2, nil)
	e.createNAD("default", "mv3", e.macvlanConf(fmt.Sprintf("mv3-%d", e.n), "192.168.73"), nil)
	e.createNAD("default", "net-b", e.ptpConf(b), nil)
	ctx := context.Background()

	p := e.newPod("default", "multus-switch", map[string]string{selection.NetworksAnnotation: "mv1,mv2"})
	e.multusAdd(t, p, [][2]string{{"default/mv1", mv1}, {"default/mv2", mv2}})
	before, err := podLinks(t, p)
	must(t, err)
	if len(before["eth0"].Addrs) != 1 || !hasAddrIn(sub1+".")(before["net1"]) || !hasAddrIn(sub2+".")(before["net2"]) {
		t.Fatalf("Multus's pod: %+v", before)
	}
	ip, _, _ := strings.Cut(before["eth0"].Addrs[0], "/")
	must(t, e.daemon.Start())

	startEcho(t, p)
	clients := map[string]*traffic{
		"eth0 through the host": startTraffic(t, farClient(t, e), ip),
		"eth0 on A's bridge":    startTraffic(t, nearClient(t, e), ip),
	}
	for ifName, subnet := range map[string]string{"net1": sub1, "net2": sub2} {
		c, err := harness.NewMacvlanClient(fmt.Sprintf("rw%s%d", ifName, e.n), e.master, subnet+".250/24")
		must(t, err)
		addr, _, _ := strings.Cut(before[ifName].Addrs[0], "/")
		clients[ifName] = startTraffic(t, c, addr)
	}
	flowing := func() {
		for _, tr := range clients {
			tr.waitFlowing(t)
		}
	}

	from := time.Now()
	setDefaultNetwork(t, p, "net-b")
	t.Logf("A->B: %s", waitEvents(t, p, "NetworkSwitched", 1)[0])
	e.assertPrimary(t, p, ip, "default/net-b", []string{b, cluster}, nil)
	flowing()
	must(t, e.rt.Check(ctx, p))

	setDefaultNetwork(t, p, "")
	t.Logf("B->A: %s", waitEvents(t, p, "NetworkSwitched", 2)[1])
	e.assertPrimary(t, p, ip, cluster, []string{cluster, b}, nil)
	flowing()
	must(t, e.rt.Check(ctx, p))
	stopClients(t, clients, from)
	links, err := podLinks(t, p)
	must(t, err)
	for _, name := range []string{"net1", "net2"} {
		if l := links[name]; l.MAC != before[name].MAC || !slices.Equal(l.Addrs, before[name].Addrs) {
			t.Errorf("%s changed by the switches: %+v, was %+v", name, l, before[name])
		}
	}

	// Hot-plug and unplug on the adopted, switched pod.
	rv := patchAnnotation(t, p, selection.NetworksAnnotation, "mv1,mv2,mv3")
	e.waitReconciled(t, p, rv)
	waitLinks(t, p, "net3 on mv3", func(l map[string]harness.Link) bool { return hasAddrIn("192.168.73.")(l["net3"]) })
	if got := statusNames(t, p, 4); got != cluster+"@eth0 default/mv1@net1 default/mv2@net2 default/mv3@net3" {
		t.Errorf("network-status = %s", got)
	}
	rv = patchAnnotation(t, p, selection.NetworksAnnotation, "mv1,mv3")
	e.waitReconciled(t, p, rv)
	waitLinks(t, p, "net2 unplugged", func(l map[string]harness.Link) bool { _, ok := l["net2"]; return !ok })
	if ips := e.allocations(); slices.ContainsFunc(ips, func(f string) bool { return strings.Contains(f, sub2+".") }) {
		t.Errorf("mv2's address still allocated after the unplug: %v", ips)
	}
	must(t, e.rt.Check(ctx, p))
	must(t, e.rt.Del(ctx, p))
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces left after DEL: %v", keys(links))
	}
	if files := e.multusFiles(t); len(files) != 0 {
		t.Errorf("Multus's files left: %v", files)
	}
	e.assertNoLeaks()
}
