package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// Plugins chained to the cluster network from files (issue 14, item 3):
// its own chain directory <dir>/<network name>/*.conf and Multus's
// auxiliaryCNIChainName, both next to its config file.

// writeChained writes one chained plugin config (content "" removes it).
func writeChained(t testing.TB, dir, chain, file, content string) {
	t.Helper()
	path := filepath.Join(dir, chain, file)
	if content == "" {
		must(t, os.Remove(path))
		return
	}
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(content), 0o644))
}

// podSysctl reads a net sysctl of the pod's netns, e.g.
// "ipv4/conf/eth0/arp_announce".
func podSysctl(t testing.TB, p *harness.Pod, key string) string {
	t.Helper()
	var v []byte
	must(t, p.NetNS.Do(func(ns.NetNS) error {
		var err error
		v, err = os.ReadFile("/proc/sys/net/" + key)
		return err
	}))
	return strings.TrimSpace(string(v))
}

// podMTU is the MTU of one of the pod's interfaces.
func podMTU(t testing.TB, p *harness.Pod, ifName string) int {
	t.Helper()
	mtu := 0
	must(t, p.NetNS.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifName)
		if err == nil {
			mtu = l.Attrs().MTU
		}
		return err
	}))
	return mtu
}

// notAlready fails when the pod's netns has the value the chain is to set
// before it runs (the check would prove nothing).
func notAlready(t testing.TB, p *harness.Pod, value string) {
	t.Helper()
	if got := podSysctl(t, p, "ipv4/conf/default/arp_announce"); got == value {
		t.Fatalf("arp_announce defaults to %s in a new netns on this host: the test cannot see the chain set it", got)
	}
}

// The cluster network's chain directory, <confDir>/<network name>/*.conf
// (the env's cluster network is the conflist in confDir): its tuning plugin
// runs after the bridge and portmap at ADD, inside the pod (MTU, sysctl),
// passes their result on, answers CHECK, and runs again at DEL from the
// config recorded at ADD, after the directory has changed: the IPAM
// allocation is released and tuning's backup of the MTU is gone. A broken
// file or one delegating to Rewire itself is an error naming the file,
// for ADD and /readyz, never skipped.
func TestClusterNetworkChainDir(t *testing.T) {
	e := newEnv(t, envOpts{})
	confDir, cluster := filepath.Join(e.dir, "net.d"), fmt.Sprintf("cluster-%d", e.n)
	backups := filepath.Join(e.dir, "tuning")
	writeChained(t, confDir, cluster, "50-tuning.conf", fmt.Sprintf(`{"type":"tuning","mtu":1400,
		"sysctl":{"net.ipv4.conf.eth0.arp_announce":"2"},"dataDir":%q}`, backups))
	writeChained(t, confDir, cluster, "README", "not a config: only *.conf files are plugins")

	ctx := context.Background()
	p := e.newPod("default", "chained", nil)
	notAlready(t, p, "2")
	r, err := e.rt.Add(ctx, p)
	must(t, err)
	ip := primaryIP(t, r) // tuning passed the bridge's result on
	if mtu, announce := podMTU(t, p, "eth0"), podSysctl(t, p, "ipv4/conf/eth0/arp_announce"); mtu != 1400 || announce != "2" {
		t.Errorf("eth0: MTU %d, arp_announce %s; want the chained tuning's 1400 and 2", mtu, announce)
	}
	backup := filepath.Join(backups, p.ContainerID+"_eth0.json")
	if _, err := os.Stat(backup); err != nil {
		t.Errorf("tuning kept no backup of eth0's MTU: %v", err)
	}
	if st := networkStatus(t, p); len(st) != 1 || st[0].Name != cluster || strings.Join(st[0].IPs, ",") != ip {
		t.Errorf("network-status = %+v, want %s with %s", st, cluster, ip)
	}
	must(t, e.rt.Check(ctx, p))

	// The directory changes; the pod's DEL runs what its ADD ran.
	writeChained(t, confDir, cluster, "50-tuning.conf", "")
	must(t, e.rt.Del(ctx, p))
	if _, err := os.Stat(backup); !os.IsNotExist(err) {
		t.Errorf("tuning's DEL did not run: its backup %s is still there (%v)", backup, err)
	}
	if a := e.allocations(); len(a) != 0 {
		t.Errorf("host-local allocations left after DEL: %v", a)
	}
	e.assertNoLeaks()

	for i, c := range []struct{ name, content, want string }{
		{"unparsable", `{"type":"tuning",`, "50-bad.conf: invalid JSON"},
		{"Rewire itself", `{"type":"rewire"}`, `50-bad.conf: type: "rewire" is Rewire's own plugin`},
	} {
		t.Run(c.name, func(t *testing.T) {
			writeChained(t, confDir, cluster, "50-bad.conf", c.content)
			defer writeChained(t, confDir, cluster, "50-bad.conf", "")
			q := e.newPod("default", fmt.Sprintf("bad-chain-%d", i), nil)
			_, err := e.rt.Add(ctx, q)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			te := cniError(t, err)
			if te.Code != types.ErrTryAgainLater || !strings.Contains(te.Details, filepath.Join(confDir, cluster, c.want)) {
				t.Errorf("error = code %d %q %q, want code 11 naming the file: %s", te.Code, te.Msg, te.Details, c.want)
			}
			if code, body, err := e.daemon.Get("/readyz"); err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, c.want) {
				t.Errorf("/readyz = %d %q (%v), want 503 naming the file", code, body, err)
			}
			if links, _ := podLinks(t, q); len(links) != 0 {
				t.Errorf("interfaces created: %v", keys(links))
			}
			must(t, e.rt.Del(ctx, q))
		})
	}
	if code, _, err := e.daemon.Get("/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("/readyz after the chain is fixed = %d (%v)", code, err)
	}
	e.assertNoLeaks()
}

// auxiliaryCNIChainName, in a Multus thick daemon's config used as it is:
// the chain's plugin runs on the cluster network's interface of every pod
// (IFNAME is eth0's name) and not on its secondaries. A live switch to a
// network without the chain and back runs it again on the new cluster
// attachment, and the pod's DEL releases every address.
func TestAuxiliaryCNIChainName(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	confDir := filepath.Join(e.dir, "net.d")
	must(t, writeConfig(e, fmt.Sprintf(`{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim","logToStderr":true,
		"clusterNetwork":%q,"confDir":%q,"binDir":%q,"cniDir":%q,"deviceInfoDir":%q,"auxiliaryCNIChainName":"vendor-cni-chain"}`,
		confDir, confDir, tools, e.multusDir(), filepath.Join(e.dir, "devinfo"))))
	must(t, e.daemon.Start())
	must(t, e.daemon.WaitReady(10*time.Second))
	if strings.Contains(e.daemon.Log(), "auxiliarycnichainname") {
		t.Errorf("auxiliaryCNIChainName logged as ignored:\n%s", tail(e.daemon.Log(), 20))
	}
	writeChained(t, confDir, "vendor-cni-chain", "10-tuning.conf", `{"type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_announce":"2"}}`)
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.91"), nil)
	e.createNAD("default", "net-b", e.ptpConf(fmt.Sprintf("b-%d", e.n)), nil)

	ctx := context.Background()
	p := e.newPod("default", "aux-chain", map[string]string{selection.NetworksAnnotation: "mv"})
	notAlready(t, p, "2")
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	announce := func() string { return podSysctl(t, p, "ipv4/conf/eth0/arp_announce") }
	if got, sec := announce(), podSysctl(t, p, "ipv4/conf/net1/arp_announce"); got != "2" || sec == "2" {
		t.Errorf("arp_announce: eth0 %s, net1 %s; want 2 on eth0 only", got, sec)
	}
	must(t, e.rt.Check(ctx, p))

	setDefaultNetwork(t, p, "net-b")
	waitEvents(t, p, "NetworkSwitched", 1)
	if got := announce(); got == "2" {
		t.Errorf("eth0 on net-b has arp_announce %s: the cluster network's chain ran on another network", got)
	}
	setDefaultNetwork(t, p, "")
	waitEvents(t, p, "NetworkSwitched", 2)
	if got := announce(); got != "2" {
		t.Errorf("eth0 back on the cluster network has arp_announce %s, want 2", got)
	}
	must(t, e.rt.Check(ctx, p))
	must(t, e.rt.Del(ctx, p))
	if a := e.allocations(); len(a) != 0 {
		t.Errorf("host-local allocations left after DEL: %v", a)
	}
	e.assertNoLeaks()
}

// A cluster network named by a NAD gets the chain directory named like its
// network in confDir too, and only where it is the cluster network: the
// same config attached as a secondary has no chain.
func TestClusterNetworkNADChain(t *testing.T) {
	ns := "rw-system"
	e := newEnv(t, envOpts{noStart: true})
	confDir, cluster := filepath.Join(e.dir, "net.d"), fmt.Sprintf("cluster-%d", e.n)
	e.createNAD(ns, "cluster-nad", e.clusterConf([2]int{}), nil)
	e.createNAD("default", "mv", e.macvlanConf(fmt.Sprintf("mv-%d", e.n), "192.168.92"), nil)
	writeChained(t, confDir, cluster, "50-tuning.conf", `{"type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_announce":"2"}}`)
	writeChained(t, confDir, fmt.Sprintf("mv-%d", e.n), "50-tuning.conf", `{"type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_announce":"2"}}`)
	must(t, writeConfig(e, fmt.Sprintf("clusterNetwork: cluster-nad\nmultusNamespace: %s\nconfDir: %s\nbinDirs: [%s]\ncniDir: %s\n",
		ns, confDir, tools, e.multusDir())))
	must(t, e.daemon.Start())
	must(t, e.daemon.WaitReady(10*time.Second))

	ctx := context.Background()
	p := e.newPod("default", "nad-chained", map[string]string{selection.NetworksAnnotation: "mv"})
	notAlready(t, p, "2")
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	if got, sec := podSysctl(t, p, "ipv4/conf/eth0/arp_announce"), podSysctl(t, p, "ipv4/conf/net1/arp_announce"); got != "2" || sec == "2" {
		t.Errorf("arp_announce: eth0 %s, net1 %s; want 2 on the cluster network's eth0 only", got, sec)
	}
	must(t, e.rt.Check(ctx, p))
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}
