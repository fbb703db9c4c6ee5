package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/rewire-cni/rewire/pkg/install"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// addRefused runs an ADD that must be refused as bad configuration (code 7)
// with want in the error and in the NetworkAddFailed Event, creating
// nothing; the pod's DEL then succeeds.
func (e *env) addRefused(t *testing.T, p *harnessPod, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := e.rt.Add(ctx, p)
	if err == nil {
		t.Fatal("ADD succeeded")
	}
	if te := cniError(t, err); te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, want) {
		t.Errorf("error = code %d %q, want code 7 containing %q", te.Code, te.Msg, want)
	}
	if msg := waitEvent(t, p, "NetworkAddFailed"); !strings.Contains(msg, want) {
		t.Errorf("NetworkAddFailed event = %q, want %q", msg, want)
	}
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces created: %v", keys(links))
	}
	must(t, e.rt.Del(ctx, p))
}

// A tenant's NAD never makes rewired call itself: a network whose plugin or
// IPAM type is Rewire's own binary, inline or found in confDir (Rewire's own
// conflist, as `rewired install` writes it), is refused at once with code 7
// and a NetworkAddFailed Event. The node is laid out as deployed: the
// rewire plugin and rewire-offline are in the daemon's bin dirs and its
// conflist is in confDir, so an accepted config would really recurse (the
// nested ADD waiting on the sandbox lock the outer ADD holds). The daemon
// keeps serving afterwards.
func TestSelfDelegationRefused(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	confDir := filepath.Join(e.dir, "net.d")
	own, err := install.Config(e.daemon.Socket, e.daemon.StateDir, "1.1.0")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(confDir, "00-rewire.conflist"), own, 0o644))
	must(t, writeConfig(e, fmt.Sprintf("clusterNetwork: %s\nconfDir: %s\nbinDirs: [%s, %s]\ndeviceInfoDir: %s\n",
		confDir, confDir, binDir, tools, filepath.Join(e.dir, "devinfo"))))
	must(t, e.daemon.Start())

	inline, ipam := fmt.Sprintf("self-%d", e.n), fmt.Sprintf("self-ipam-%d", e.n)
	e.createNAD("default", inline, fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"rewire","socketPath":%q}`, inline, e.daemon.Socket), nil)
	e.createNAD("default", ipam, fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"macvlan","master":%q,"ipam":{"type":"rewire-offline"}}`,
		ipam, e.master), nil)
	e.createNAD("kube-system", "rewire-cni-network", "", nil) // an empty config: the file in confDir of that name
	cases := []struct{ name, networks, want string }{
		{"inline plugin type", inline, `type: "rewire" is Rewire's own plugin`},
		{"inline ipam type", ipam, `ipam type: "rewire-offline" is Rewire's own plugin`},
		{"rewire's conflist in confDir", "kube-system/rewire-cni-network", `00-rewire.conflist: CNI config "rewire-cni-network" plugin 0: type: "rewire" is Rewire's own plugin`},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := e.newPod("default", fmt.Sprintf("self-%d-%d", e.n, i), map[string]string{selection.NetworksAnnotation: c.networks})
			e.addRefused(t, p, c.want)
		})
	}
	// Still serving: a pod of the cluster network only comes and goes.
	p := e.newPod("default", fmt.Sprintf("after-self-%d", e.n), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = e.rt.Add(ctx, p)
	must(t, err)
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// With namespace isolation, a NAD with an empty spec.config is resolved
// through confDir only in the Multus namespace and the global namespaces:
// a tenant cannot reach the node's private networks by creating a NAD named
// after one in its own namespace. The same NAD in the global namespace
// "default" works.
func TestConfDirNADsOnlyWhereIsolationAllows(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "namespaceIsolation: true\n"})
	name := fmt.Sprintf("private-%d", e.n)
	must(t, os.WriteFile(filepath.Join(e.dir, "net.d", "20-"+name+".conf"), []byte(e.macvlanConf(name, "192.168.81")), 0o644))
	e.createNAD("other", name, "", nil)
	e.createNAD("default", name, "", nil)

	tenant := e.newPod("other", "confdir-tenant", map[string]string{selection.NetworksAnnotation: name})
	e.addRefused(t, tenant, fmt.Sprintf(`NetworkAttachmentDefinition other/%s has no spec.config: with namespaceIsolation, `+
		`only NADs in namespaces kube-system, default may take their config from the node's confDir, not NADs in "other": `+
		`put the CNI config into spec.config`, name))

	admin := e.newPod("default", "confdir-global", map[string]string{selection.NetworksAnnotation: name})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, admin)
	must(t, err)
	links, err := podLinks(t, admin)
	must(t, err)
	if _, ok := links["net1"]; !ok {
		t.Errorf("no net1 from the confDir network in the global namespace: %v", keys(links))
	}
	must(t, e.rt.Del(ctx, admin))
	e.assertNoLeaks()
}
