package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/multuscache"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/test/harness"
)

// The node's CNI directories and the names thin Multus uses on it.
const (
	cniConfDir = "/etc/cni/net.d"
	cniBinDir  = "/opt/cni/bin"
	// runtimeCache is containerd's libcni cache dir (its default).
	runtimeCache = "/var/lib/cni"
	// multusNetwork is the network name of the config Multus's thin
	// entrypoint writes (unless --override-network-name).
	multusNetwork = "multus-cni-network"
	// multusConflist is that config: the entrypoint writes a config list
	// (00-multus.conflist) when the cluster network's config, here
	// 10-bridge.conflist, is CNI 1.0.0, else 00-multus.conf.
	multusConflist = "00-multus.conflist"
	rewireConflist = "00-rewire.conflist"
)

// takeoverNADs are the pod's two macvlan networks (one a single config,
// one a list, as Multus runs either) and a third one to hot-plug, each
// with its name in the config as Multus injects it.
func takeoverNADs() map[string]string {
	conf := func(name, subnet string) string {
		return fmt.Sprintf(`"cniVersion":"0.3.1","name":%q,"type":"macvlan","master":%q,"mode":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"%s.0/24","rangeStart":"%s.10","rangeEnd":"%s.20"}]]}`,
			name, mvMaster, subnet, subnet, subnet)
	}
	return map[string]string{
		"mt-net1": "{" + conf("mt-net1", "192.168.61") + "}",
		"mt-net2": `{"cniVersion":"0.4.0","name":"mt-net2","plugins":[{` + strings.Replace(conf("mt-net2", "192.168.62"),
			`"cniVersion":"0.3.1","name":"mt-net2",`, "", 1) + `}]}`,
		"mt-net3": "{" + conf("mt-net3", "192.168.63") + "}",
	}
}

func nadYAML(name, config string) string {
	return fmt.Sprintf("apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: %s, namespace: default}\nspec:\n  config: '%s'\n", name, config)
}

// A node where thin Multus networked a pod (eth0 on the cluster network,
// two macvlan networks) is taken over by Rewire installed with
// deploy/over-multus, and the pod then lives on under Rewire: a network is
// hot-plugged and unplugged, its primary is switched to ptp and back
// keeping its IP while the host pings it and its secondary at 1 kHz, and
// its DEL, from the kubelet, releases everything Multus and Rewire held.
//
// There is no Multus binary here, so the pod is made as Multus makes one,
// by hand: created while the runtime's config is the bridge (containerd
// runs it for eth0, as Multus runs its cluster network), then the two
// macvlan delegates run into its netns through libcni with Multus's cniDir
// as the cache dir, and Multus's delegates file, the runtime's and Multus's
// libcni cache files and the network-status annotation are written as
// Multus writes them (pkg/multuscache cites the code), as is Multus's
// 00-multus.conflist, the runtime's config when Rewire is installed.
func TestMultusTakeoverNode(t *testing.T) {
	macvlanMaster(t)
	hostCmd(t, "ip", "addr", "add", "192.168.61.250/24", "dev", mvPeer) // the host reaches net1 through the master
	nads := takeoverNADs()
	for name, conf := range nads {
		mustKubectl(t, nadYAML(name, conf), "apply", "-f", "-")
	}
	mustKubectl(t, ptpNAD, "apply", "-f", "-")
	t.Cleanup(func() {
		kubectl("", "delete", "net-attach-def", "mt-net1", "mt-net2", "mt-net3", "e2e-ptp", "--ignore-not-found")
	})
	removeRewire(t)

	// The node as Multus leaves it.
	linksBefore := hostLinks(t)
	createPod(t, "default", "mt-pod", map[string]string{networksAnn: "mt-net1,mt-net2"})
	ip := waitRunning(t, "default", "mt-pod", 60*time.Second).Status.PodIP
	id := sandboxID(t, "mt-pod")
	multusAdd(t, id, [][2]string{{"default/mt-net1", nads["mt-net1"]}, {"default/mt-net2", nads["mt-net2"]}})
	before := podNetState(t, "mt-pod")
	if a := before.addrs; len(a["eth0"]) != 1 || a["eth0"][0] != ip || len(a["net1"]) != 1 || len(a["net2"]) != 1 {
		t.Fatalf("the pod as Multus made it: %v", a)
	}

	// Rewire over it.
	installOverMultus(t)
	logs := mustKubectl(t, "", "-n", "kube-system", "logs", rewiredPod(t))
	if !hasLine(logs, "adopted a sandbox another meta plugin made", id) {
		t.Fatalf("rewired did not adopt %s:\n%s", id, lastLines(logs, 30))
	}
	if after := podNetState(t, "mt-pod"); !sameState(before, after) {
		t.Fatalf("the pod changed at the takeover:\nbefore %+v\nafter  %+v", before, after)
	}

	hotplugAdopted(t, before)
	switchAdopted(t, before)

	// The kubelet's DEL releases everything.
	deletePods(t, "default", "mt-pod")
	assertReleased(t, "mt-net1", "mt-net2", "mt-net3", "e2e-ptp", "e2e-bridge")
	assertNoFilesOf(t, id, multuscache.DefaultDir, filepath.Join(multuscache.DefaultDir, "results"),
		filepath.Join(runtimeCache, "results"), "/var/lib/rewire/cache/results")
	if after := hostLinks(t); !maps.Equal(after, linksBefore) {
		t.Errorf("host links before the pod %v, after its DEL %v", slices.Sorted(maps.Keys(linksBefore)), slices.Sorted(maps.Keys(after)))
	}
}

// hotplugAdopted plugs a third network into the adopted pod and unplugs
// it: the interfaces Multus made are left as they were (before).
func hotplugAdopted(t *testing.T, before podState) {
	t.Helper()
	mustKubectl(t, "", "annotate", "pod", "mt-pod", "--overwrite", networksAnn+"=mt-net1,mt-net2,mt-net3")
	st := waitStatus(t, "default", "mt-pod", 4)
	if st[3].Name != "default/mt-net3" || st[3].Interface != "net3" || len(st[3].IPs) != 1 ||
		!slices.Equal(podAddrs(t, "default", "mt-pod")["net3"], st[3].IPs) {
		t.Fatalf("after the hot-plug: network-status %+v, addresses %v", st, podAddrs(t, "default", "mt-pod"))
	}
	mustKubectl(t, "", "annotate", "pod", "mt-pod", "--overwrite", networksAnn+"=mt-net1,mt-net2")
	waitStatus(t, "default", "mt-pod", 3)
	eventually(t, 30*time.Second, "net3 unplugged and released", func() error {
		if a, ok := podAddrs(t, "default", "mt-pod")["net3"]; ok {
			return fmt.Errorf("net3 still has %v", a)
		}
		if ips := hostLocalIPs("mt-net3"); len(ips) > 0 {
			return fmt.Errorf("host-local of mt-net3 holds %v", ips)
		}
		return nil
	})
	if after := podNetState(t, "mt-pod"); !sameState(before, after) {
		t.Fatalf("the pod is not as Multus made it after the plug and unplug:\nbefore %+v\nafter  %+v", before, after)
	}
}

// switchAdopted switches the adopted pod's primary to ptp and back while
// the host pings eth0 and net1 at 1 kHz: no ping is lost, both networks
// hold the IP, the secondaries are left as they were (before).
func switchAdopted(t *testing.T, before podState) {
	t.Helper()
	ip, net1 := before.addrs["eth0"][0], before.addrs["net1"][0]
	p, err := getPod("default", "mt-pod")
	if err != nil {
		t.Fatal(err)
	}
	uid := string(p.UID) // earlier pods of that name have Events too
	pings := map[string]*harness.Pinger{}
	steady := map[string]harness.ProbeStats{}
	for _, a := range []string{ip, net1} {
		ping, err := harness.StartPinger(a, time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		pings[a] = ping
		steady[a] = steadyReplies(t, a, ping)
	}
	for i, step := range []struct{ annotation, to string }{
		{"v1.multus-cni.io/default-network=e2e-ptp", "default/e2e-ptp"},
		{"v1.multus-cni.io/default-network-", "e2e-bridge"}, // back to the cluster network
	} {
		to := step.to
		mustKubectl(t, "", "annotate", "pod", "mt-pod", step.annotation)
		onPrimaryIPs(t, "mt-pod", to, []string{ip}, 3)
		if a := podAddrs(t, "default", "mt-pod"); !slices.Equal(a["eth0"], []string{ip}) || !slices.Equal(a["net1"], []string{net1}) {
			t.Fatalf("after the switch to %s: addresses %v", to, a)
		}
		for _, n := range []string{"e2e-bridge", "e2e-ptp"} {
			if !slices.Contains(hostLocalIPs(n), ip) {
				t.Fatalf("after the switch to %s host-local of %s does not hold %s: %v", to, n, ip, hostLocalIPs(n))
			}
		}
		eventually(t, 20*time.Second, "the NetworkSwitched event", func() error {
			if got := switchEvents(t, uid); len(got) != i+1 {
				return fmt.Errorf("NetworkSwitched events: %q", got)
			}
			return nil
		})
	}
	t.Logf("NetworkSwitched events:\n%s", strings.Join(switchEvents(t, uid), "\n"))
	for a, ping := range pings {
		s, pre := ping.Stop(), steady[a]
		lost := ping.LostSince(pre.Sent)
		t.Logf("1 kHz ping from the host to %s: %s in all; over both switches %d sent, %d lost", a, s, s.Sent-pre.Sent, lost)
		if lost > 0 {
			t.Errorf("%d pings to %s lost over the switches", lost, a)
		}
	}
	if after := podNetState(t, "mt-pod"); !maps.EqualFunc(before.addrs, after.addrs, slices.Equal) || before.macs["net1"] != after.macs["net1"] ||
		before.macs["net2"] != after.macs["net2"] {
		t.Errorf("after the switches:\nbefore %+v\nafter  %+v", before, after)
	}
}

// switchEvents are the messages of the NetworkSwitched Events of the pod
// with that UID, oldest first.
func switchEvents(t *testing.T, uid string) []string {
	t.Helper()
	out := mustKubectl(t, "", "-n", "default", "get", "events", "--sort-by", ".metadata.creationTimestamp",
		"--field-selector", "involvedObject.uid="+uid+",reason=NetworkSwitched", "-o", `jsonpath={range .items[*]}{.message}{"\n"}{end}`)
	if out = strings.TrimSpace(out); out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// removeRewire deletes Rewire's DaemonSet and its CNI config, so that the
// runtime runs the bridge itself; deploy/ is installed again at the end of
// the test (in place of anything left in the conf dir's 00-multus.*).
func removeRewire(t *testing.T) {
	t.Helper()
	mustKubectl(t, "", "-n", "kube-system", "delete", "daemonset", "rewire", "--wait=true", "--timeout=120s")
	waitRewiredGone(t)
	t.Cleanup(func() {
		for _, f := range []string{"00-multus.conf", multusConflist} {
			_ = os.Remove(filepath.Join(cniConfDir, f))
		}
		mustKubectl(t, "", "apply", "-k", repoRoot+"/deploy")
		mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
		waitCNINetwork(t, "rewire-cni-network")
		kubectl("", "-n", "default", "delete", "pod", "mt-pod", "--ignore-not-found", "--wait=true", "--timeout=90s")
	})
	if err := os.Remove(filepath.Join(cniConfDir, rewireConflist)); err != nil {
		t.Fatal(err)
	}
	waitCNINetwork(t, "e2e-bridge")
}

// installOverMultus installs Rewire as docs/migrating-from-multus.md says:
// a kustomization of deploy/ with the deploy/over-multus component, and
// Multus's config (the 00-multus.conflist on the node) as rewired's, with
// the paths as rewired sees the host.
func installOverMultus(t *testing.T) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(cniConfDir, multusConflist))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	plugin := list["plugins"].([]any)[0].(map[string]any)
	plugin["confDir"], plugin["binDir"] = "/host"+cniConfDir, "/host"+cniBinDir
	config, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	patch, _ := json.Marshal([]map[string]string{{"op": "replace", "path": "/data/config.yaml", "value": string(config)}})
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%s/deploy]
components: [%s/deploy/over-multus]
patches:
  - target: {kind: ConfigMap, name: rewire-config}
    patch: '%s'
`, rel, rel, patch)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mustKubectl(t, "", "apply", "-k", dir)
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
	t.Logf("rewire DaemonSet Ready %.1f s after kubectl apply -k of deploy/ with deploy/over-multus", time.Since(start).Seconds())
	files, err := libcni.ConfFiles(cniConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) != 2 || filepath.Base(files[0]) != multusConflist {
		t.Fatalf("conf dir after the install: %v %v, want Rewire's %s and the bridge's", files, err, multusConflist)
	}
	// Rewire's config keeps the network name of Multus's: the runtime's
	// libcni cache of the pod is keyed by it, and its DEL removes it.
	conf, err := libcni.ConfListFromFile(files[0])
	if err != nil || conf.Plugins[0].Network.Type != "rewire" || conf.Name != multusNetwork {
		t.Fatalf("%s after the install: %+v %v", files[0], conf, err)
	}
	waitCNINetwork(t, multusNetwork)
}

// sandboxID is the container ID of the pod's ready sandbox.
func sandboxID(t *testing.T, pod string) string {
	t.Helper()
	out, err := crictl("pods", "-q", "--name", pod, "--namespace", "default", "--state", "ready")
	ids := strings.Fields(out)
	if err != nil || len(ids) != 1 {
		t.Fatalf("sandbox of %s: %q %v", pod, out, err)
	}
	return ids[0]
}

// multusAdd turns the pod's sandbox, whose eth0 the runtime made with the
// bridge, into one thin Multus made, Multus's CmdAdd done by hand
// (pkg/multus/multus.go; the runtime configuration of newCNIRuntimeConf in
// pkg/types/conf.go):
//   - the runtime called Multus, not the bridge: its libcni cache of the
//     bridge call becomes one of the multus-cni-network call (Multus's
//     config list, the bridge's result, which Multus returned);
//   - Multus ran the bridge as delegates[0] (its config re-encoded by the
//     entrypoint), then each network of nets ("namespace/name", config)
//     as net1, net2, …, through libcni with its cniDir as the cache dir and
//     its CNI_ARGS (its own, then the runtime's appended);
//   - it saved the delegates (saveDelegates) and wrote network-status.
//
// Multus's 00-multus.conflist is then written into the conf dir, as the
// entrypoint writes it.
func multusAdd(t *testing.T, id string, nets [][2]string) {
	t.Helper()
	bridge, err := os.ReadFile(filepath.Join(cniConfDir, "10-bridge.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var masterConfig map[string]any
	if err := json.Unmarshal(bridge, &masterConfig); err != nil {
		t.Fatal(err)
	}
	masterJSON, _ := json.Marshal(masterConfig) // the entrypoint's MasterPluginJSON
	conflist := multusConflistFor(masterJSON)

	runtimeFile := filepath.Join(runtimeCache, "results", leancni.ResultFile("e2e-bridge", id, "eth0"))
	eth0 := readCached(t, runtimeFile)
	args := append([][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "mt-pod"},
		{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", argOf(eth0, "K8S_POD_UID")}}, eth0.CniArgs...)

	// The runtime's cache: the multus-cni-network call.
	runtimeCall := *eth0
	runtimeCall.Config, runtimeCall.NetworkName = []byte(conflist), multusNetwork
	writeCached(t, runtimeCache, &runtimeCall)
	if err := os.Remove(runtimeFile); err != nil {
		t.Fatal(err)
	}

	// Multus's: the cluster network's call, then the networks'.
	master, err := multuscache.NewDelegate(masterJSON, "")
	if err != nil {
		t.Fatal(err)
	}
	master.MasterPlugin = true
	masterCall := *eth0
	masterCall.Config, masterCall.CniArgs, masterCall.CapabilityArgs = masterJSON, args, nil
	writeCached(t, multuscache.DefaultDir, &masterCall)
	res, err := current.NewResultFromResult(resultOf(t, eth0))
	if err != nil {
		t.Fatal(err)
	}
	delegates := []*multuscache.DelegateNetConf{master}
	status := []netstatus.Status{netstatus.FromResult(master.Name, "eth0", true, res)}
	cni := libcni.NewCNIConfigWithCacheDir([]string{cniBinDir}, multuscache.DefaultDir, nil)
	for i, n := range nets {
		d, err := multuscache.NewDelegate([]byte(n[1]), n[0])
		if err != nil {
			t.Fatal(err)
		}
		delegates = append(delegates, d)
		rt := &libcni.RuntimeConf{ContainerID: id, NetNS: eth0.NetNS, IfName: multuscache.IfName(d, "eth0", i+1), Args: args}
		var r types.Result
		if d.ConfListPlugin {
			list, err := libcni.ConfListFromBytes(d.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			r, err = cni.AddNetworkList(context.Background(), list, rt)
		} else {
			conf, err := libcni.ConfFromBytes(d.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			r, err = cni.AddNetwork(context.Background(), conf, rt)
		}
		if err != nil {
			t.Fatalf("Multus's delegate %s: %v", n[0], err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			t.Fatal(err)
		}
		status = append(status, netstatus.FromResult(d.Name, rt.IfName, false, res))
	}
	if err := multuscache.WriteDelegates(multuscache.DefaultDir, id, delegates); err != nil {
		t.Fatal(err)
	}
	value, err := netstatus.Marshal(status)
	if err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "", "annotate", "pod", "mt-pod", "--overwrite", statusAnn+"="+value)
	if err := os.WriteFile(filepath.Join(cniConfDir, multusConflist), []byte(conflist), 0o600); err != nil {
		t.Fatal(err)
	}
	waitCNINetwork(t, multusNetwork)
}

// multusConflistFor is the 00-multus.conflist Multus's thin entrypoint
// writes (multusConflistTemplate, default flags) for a CNI 1.0.0 cluster
// network: the capabilities of its plugins, Multus's own config dir and
// kubeconfig, the cluster network as the only delegate.
func multusConflistFor(master []byte) string {
	return fmt.Sprintf(`{
    "cniVersion": "1.0.0",
    "name": %q,
    "plugins": [ {
        "type": "multus",
        "capabilities": {"ips":true,"portMappings":true},
        "cniConf": "/host/etc/cni/multus/net.d",
        "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
        "delegates": [
            %s
        ]
    }]
}
`, multusNetwork, master)
}

func readCached(t *testing.T, path string) *multuscache.CachedResult {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := &multuscache.CachedResult{}
	if err := json.Unmarshal(raw, c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// writeCached writes a libcni cache file into a cache dir as libcni does.
func writeCached(t *testing.T, dir string, c *multuscache.CachedResult) {
	t.Helper()
	raw, err := json.Marshal(c)
	if err == nil {
		err = os.MkdirAll(leancni.ResultsDir(dir), 0o700)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(leancni.ResultsDir(dir), leancni.ResultFile(c.NetworkName, c.ContainerID, c.IfName)), raw, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func argOf(c *multuscache.CachedResult, key string) string {
	for _, kv := range c.CniArgs {
		if kv[0] == key {
			return kv[1]
		}
	}
	return ""
}

// resultOf decodes a cached call's result.
func resultOf(t *testing.T, c *multuscache.CachedResult) *current.Result {
	t.Helper()
	raw, err := json.Marshal(c.RawResult)
	if err != nil {
		t.Fatal(err)
	}
	res := &current.Result{}
	if err := json.Unmarshal(raw, res); err != nil {
		t.Fatal(err)
	}
	return res
}

// assertNoFilesOf checks that no file in dirs names the container.
func assertNoFilesOf(t *testing.T, id string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.Contains(e.Name(), id) {
				t.Errorf("%s left after the pod's DEL", filepath.Join(d, e.Name()))
			}
		}
	}
}
