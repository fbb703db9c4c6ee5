package multuscache

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/store"
)

var update = flag.Bool("update", false, "rewrite testdata/ from the fixtures below")

// The fixture: a pod Multus networked with its cluster network (a config
// list from a file, the master plugin), a NAD whose config is a single
// macvlan config, and a NAD asking for addresses, a MAC and the default
// route (static IPAM, none of its plugins declaring ips or mac).
const (
	fixtureID  = "5e1f0c0ffee0"
	fixtureUID = "4a8f1c3e-0000-4000-8000-000000000001"
	fixtureNS  = "/var/run/netns/cni-1234"
)

var (
	clusterConf = `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","subnet":"10.244.1.0/24"}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	mv1Conf     = `{"cniVersion":"0.3.1","name":"mv1","type":"macvlan","master":"eth1","mode":"bridge","ipam":{"type":"host-local","subnet":"192.168.1.0/24"}}`
	mv2Conf     = `{"cniVersion":"0.4.0","name":"mv2","plugins":[{"type":"macvlan","master":"eth2","mode":"bridge","ipam":{"type":"static"}}]}`
)

// fixtureDelegates are the delegates as Multus's CmdAdd has them when it
// calls saveDelegates: the NADs' names are namespace/name, the requests of
// the selection element are set (LoadDelegateNetConf).
func fixtureDelegates(t *testing.T) []*DelegateNetConf {
	t.Helper()
	cluster, err := NewDelegate([]byte(clusterConf), "")
	must(t, err)
	cluster.MasterPlugin = true
	mv1, err := NewDelegate([]byte(mv1Conf), "default/mv1")
	must(t, err)
	mv2, err := NewDelegate([]byte(mv2Conf), "default/mv2")
	must(t, err)
	mv2.IPRequest, mv2.MacRequest = []string{"10.1.1.21/24"}, "02:00:00:01:01:21"
	gw := []net.IP{net.ParseIP("10.1.1.254")}
	mv2.GatewayRequest = &gw
	return []*DelegateNetConf{cluster, mv1, mv2}
}

var podArgs = [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "samplepod"},
	{"K8S_POD_INFRA_CONTAINER_ID", fixtureID}, {"K8S_POD_UID", fixtureUID}}

// fixtureResults are libcni's cache entries of the three calls, as
// cacheAdd writes them (each result in its config's version).
func fixtureResults() []CachedResult {
	mv2Args := append(slices.Clone(podArgs), [2]string{"MAC", "02:00:00:01:01:21"}, [2]string{"IP", "10.1.1.21/24"})
	return []CachedResult{
		{Kind: CacheKind, ContainerID: fixtureID, Config: []byte(clusterConf), IfName: "eth0", NetworkName: "cbr0", NetNS: fixtureNS,
			CniArgs: podArgs, CapabilityArgs: map[string]interface{}{"portMappings": []interface{}{}},
			RawResult: decode(`{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:f4:01:01"},{"name":"veth1","mac":"aa:bb:cc:00:00:01"},{"name":"eth0","mac":"0a:58:0a:f4:01:05","sandbox":"` + fixtureNS + `"}],"ips":[{"interface":2,"address":"10.244.1.5/24","gateway":"10.244.1.1"}],"dns":{}}`)},
		{Kind: CacheKind, ContainerID: fixtureID, Config: []byte(mv1Conf), IfName: "net1", NetworkName: "mv1", NetNS: fixtureNS,
			CniArgs:   podArgs,
			RawResult: decode(`{"cniVersion":"0.3.1","interfaces":[{"name":"net1","mac":"02:11:22:33:44:55","sandbox":"` + fixtureNS + `"}],"ips":[{"version":"4","interface":0,"address":"192.168.1.7/24","gateway":"192.168.1.1"}],"dns":{}}`)},
		{Kind: CacheKind, ContainerID: fixtureID, Config: []byte(mv2Conf), IfName: "net2", NetworkName: "mv2", NetNS: fixtureNS,
			CniArgs: mv2Args, CapabilityArgs: map[string]interface{}{"ips": []interface{}{"10.1.1.21/24"}, "mac": "02:00:00:01:01:21"},
			RawResult: decode(`{"cniVersion":"0.4.0","interfaces":[{"name":"net2","mac":"02:00:00:01:01:21","sandbox":"` + fixtureNS + `"}],"ips":[{"version":"4","interface":0,"address":"10.1.1.21/24"}],"dns":{}}`)},
	}
}

// fixtureStatus is the network-status Multus wrote for the pod.
const fixtureStatus = `[{"name":"cbr0","interface":"eth0","ips":["10.244.1.5"],"mac":"0a:58:0a:f4:01:05","default":true,"dns":{}},` +
	`{"name":"default/mv1","interface":"net1","ips":["192.168.1.7"],"mac":"02:11:22:33:44:55","dns":{}},` +
	`{"name":"default/mv2","interface":"net2","ips":["10.1.1.21"],"mac":"02:00:00:01:01:21","dns":{}}]`

func decode(s string) map[string]interface{} {
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		panic(err)
	}
	return m
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The files in testdata/ are what Multus writes for the fixture: the
// delegates file by saveDelegates' json.Marshal, the result files by
// libcni's cacheAdd. Regenerate with go test -run TestFixtures -update.
func TestFixturesAreMultusFormat(t *testing.T) {
	dir := t.TempDir()
	must(t, WriteDelegates(dir, fixtureID, fixtureDelegates(t)))
	for _, r := range fixtureResults() {
		raw, err := json.Marshal(r)
		must(t, err)
		must(t, os.MkdirAll(leancni.ResultsDir(dir), 0o700))
		must(t, os.WriteFile(filepath.Join(leancni.ResultsDir(dir), leancni.ResultFile(r.NetworkName, fixtureID, r.IfName)), raw, 0o600))
	}
	files := []string{fixtureID, "results/" + leancni.ResultFile("cbr0", fixtureID, "eth0"),
		"results/" + leancni.ResultFile("mv1", fixtureID, "net1"), "results/" + leancni.ResultFile("mv2", fixtureID, "net2")}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(dir, f))
		must(t, err)
		want := filepath.Join("testdata", f)
		if *update {
			must(t, os.MkdirAll(filepath.Dir(want), 0o755))
			must(t, os.WriteFile(want, got, 0o644))
			continue
		}
		if w, err := os.ReadFile(want); err != nil || !bytes.Equal(got, w) {
			t.Errorf("%s differs from what the fixture makes (go test -update): %v", f, err)
		}
	}
	st, err := os.Stat(Path(dir, fixtureID))
	must(t, err)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("delegates file mode %v, want 0600 as saveScratchNetConf", st.Mode().Perm())
	}
	// What libcni itself makes of them: each is one of its attachments.
	cni := libcni.NewCNIConfigWithCacheDir(nil, "testdata", nil)
	atts, err := cni.GetCachedAttachments(fixtureID)
	must(t, err)
	if len(atts) != 3 || atts[0].Network != "cbr0" || atts[0].NetNS != fixtureNS {
		t.Errorf("libcni reads %d attachments: %+v", len(atts), atts)
	}
}

// copyFixture copies testdata/ (or what keep says of it) to a temp dir.
func copyFixture(t *testing.T, keep func(rel string) bool) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("testdata", path)
		if keep != nil && !keep(rel) {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o700))
		return os.WriteFile(filepath.Join(dir, rel), raw, 0o600)
	})
	must(t, err)
	return dir
}

func TestSandbox(t *testing.T) {
	onlyDelegates := func(rel string) bool { return rel == fixtureID }
	cases := []struct {
		name  string
		keep  func(rel string) bool
		hint  Hint
		check func(t *testing.T, sb *store.Sandbox, cached []*CachedResult)
	}{
		{"delegates and libcni's cache", nil, Hint{}, func(t *testing.T, sb *store.Sandbox, cached []*CachedResult) {
			if len(cached) != 3 {
				t.Errorf("cache files = %d, want 3", len(cached))
			}
			if sb.NetNS != fixtureNS || sb.PodUID != fixtureUID || sb.PodName != "samplepod" || sb.PodNamespace != "default" ||
				!slices.Equal(sb.Args, podArgs) || sb.CNIVersion != "1.0.0" {
				t.Errorf("sandbox = %+v", sb)
			}
			mv2 := sb.Find("net2")
			if mv2 == nil || !slices.Equal(mv2.CNIArgs(), [][2]string{{"MAC", "02:00:00:01:01:21"}, {"IP", "10.1.1.21/24"}}) ||
				mv2.CapabilityArgs["mac"] != "02:00:00:01:01:21" {
				t.Errorf("net2 = %+v", mv2)
			}
			if p := sb.Find("eth0"); p.CapabilityArgs["portMappings"] == nil {
				t.Errorf("eth0 capability args = %v", p.CapabilityArgs)
			}
			wantIP(t, sb, "net1", "192.168.1.7/24")
		}},
		{"delegates only, with network-status", onlyDelegates, Hint{NetNS: "/run/netns/x",
			NetworkStatus: `[{"name":"cbr0","interface":"eth9","ips":["10.244.1.5"],"default":true},{"name":"default/mv1","interface":"net1","ips":["192.168.1.7"],"mac":"02:11:22:33:44:55"}]`},
			func(t *testing.T, sb *store.Sandbox, cached []*CachedResult) {
				if len(cached) != 0 || sb.NetNS != "/run/netns/x" || sb.IfName != "eth9" || sb.Args != nil {
					t.Errorf("sandbox = %+v, %d cache files", sb, len(cached))
				}
				mv2 := sb.Find("net2")
				if mv2 == nil || !slices.Equal(mv2.CNIArgs(), [][2]string{{"MAC", "02:00:00:01:01:21"}, {"IP", "10.1.1.21/24"}}) ||
					mv2.CapabilityArgs["mac"] != "02:00:00:01:01:21" {
					t.Errorf("net2 = %+v", mv2)
				}
				wantIP(t, sb, "eth9", "10.244.1.5/32")
				wantIP(t, sb, "net1", "192.168.1.7/32")
			}},
		{"delegates only", onlyDelegates, Hint{}, func(t *testing.T, sb *store.Sandbox, _ []*CachedResult) {
			if sb.IfName != "eth0" || sb.NetNS != "" || sb.PodUID != "" {
				t.Errorf("sandbox = %+v", sb)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyFixture(t, c.keep)
			sb, cached, err := Sandbox(dir, fixtureID, c.hint)
			must(t, err)
			if sb.ContainerID != fixtureID || !sb.Complete || sb.Adopted != "multus:"+dir || len(sb.Attachments) != 3 {
				t.Fatalf("sandbox = %+v", sb)
			}
			for i, want := range []struct{ network, conf string }{{"cbr0", clusterConf}, {"default/mv1", ""}, {"default/mv2", mv2Conf}} {
				a := sb.Attachments[i]
				if a.Network != want.network || a.Primary != (i == 0) || a.State != store.Added || a.Selection != "" {
					t.Errorf("attachment %d = %+v", i, a.Spec)
				}
				list, err := a.ConfList()
				if err != nil || want.conf != "" && string(a.Config) != want.conf {
					t.Errorf("attachment %d config %s: %v", i, a.Config, err)
				}
				if i == 1 && (list.Name != "mv1" || list.CNIVersion != "0.3.1" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "macvlan") {
					t.Errorf("single config as a list: %s", a.Config)
				}
			}
			if a := sb.Attachments[2]; !slices.Equal(a.DefaultRoute, []string{"10.1.1.254"}) {
				t.Errorf("default route = %v", a.DefaultRoute)
			}
			if sb.Attachments[1].IfName != "net1" || sb.Attachments[2].IfName != "net2" {
				t.Errorf("interface names %s %s", sb.Attachments[1].IfName, sb.Attachments[2].IfName)
			}
			c.check(t, sb, cached)
		})
	}
}

func wantIP(t *testing.T, sb *store.Sandbox, ifName, ip string) {
	t.Helper()
	a := sb.Find(ifName)
	if a == nil {
		t.Errorf("no %s", ifName)
		return
	}
	res := &current.Result{}
	must(t, json.Unmarshal(a.Result, res))
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != ip {
		t.Errorf("%s result = %s, want %s", ifName, a.Result, ip)
	}
}

func TestSandboxWithoutOrBadCache(t *testing.T) {
	dir := t.TempDir()
	sb, _, err := Sandbox(dir, fixtureID, Hint{})
	if sb != nil || err != nil {
		t.Errorf("no file: %v %v", sb, err)
	}
	for name, content := range map[string]string{"not JSON": "{", "empty list": "[]", "no config": `[{"Name":"x"}]`} {
		must(t, os.WriteFile(Path(dir, fixtureID), []byte(content), 0o600))
		if sb, _, err := Sandbox(dir, fixtureID, Hint{}); err == nil {
			t.Errorf("%s: %+v", name, sb)
		}
	}
	if _, err := ReadDelegates(dir, "../x"); err == nil {
		t.Error("a path as container ID was read")
	}
}

func TestContainersAndRemove(t *testing.T) {
	dir := copyFixture(t, nil)
	must(t, os.WriteFile(Path(dir, "other"), []byte("[]"), 0o600)) // another pod, no cache
	for _, c := range []struct{ uid, want string }{{"", "5e1f0c0ffee0 other"}, {fixtureUID, fixtureID}, {"nobody", ""}} {
		ids, err := Containers(dir, c.uid)
		must(t, err)
		if got := join(ids); got != c.want {
			t.Errorf("Containers(%q) = %q, want %q", c.uid, got, c.want)
		}
	}
	must(t, Remove(dir, fixtureID))
	must(t, Remove(dir, fixtureID)) // idempotent
	if _, err := os.Stat(Path(dir, fixtureID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("delegates file left: %v", err)
	}
	if left, _ := os.ReadDir(leancni.ResultsDir(dir)); len(left) != 0 {
		t.Errorf("cache files left: %v", left)
	}
}

func TestSourceCopiesLibcniCache(t *testing.T) {
	dir, cache := copyFixture(t, nil), t.TempDir()
	s := Source{Dir: dir, CacheDir: cache}
	sb, err := s.Sandbox(fixtureID, "", fixtureStatus)
	must(t, err)
	atts, err := libcni.NewCNIConfigWithCacheDir(nil, cache, nil).GetCachedAttachments(fixtureID)
	must(t, err)
	if sb == nil || len(atts) != 3 {
		t.Fatalf("sandbox %v, %d attachments in Rewire's libcni cache", sb, len(atts))
	}
	off := Source{Dir: Off, CacheDir: cache}
	if sb, err := off.Sandbox(fixtureID, "", ""); sb != nil || err != nil {
		t.Errorf("takeover off: %v %v", sb, err)
	}
}

func join(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out
}

// A delegates file truncated by a crash: the record is built from libcni's
// cache alone (every attachment's exact config, interface and result), so
// the sandbox's DEL still releases everything.
func TestSandboxDamagedDelegatesFromCache(t *testing.T) {
	dir := copyFixture(t, nil)
	must(t, os.WriteFile(Path(dir, fixtureID), []byte(`[{"Conf":{"name":"cb`), 0o600))
	sb, cached, err := Sandbox(dir, fixtureID, Hint{})
	must(t, err)
	if len(cached) != 3 || len(sb.Attachments) != 3 || sb.NetNS != fixtureNS || sb.IfName != "eth0" || !sb.Complete {
		t.Fatalf("sandbox = %+v, %d cache files", sb, len(cached))
	}
	for i, want := range []struct{ network, ifName string }{{"cbr0", "eth0"}, {"mv1", "net1"}, {"mv2", "net2"}} {
		a := sb.Attachments[i]
		if a.Network != want.network || a.IfName != want.ifName || a.Primary != (i == 0) {
			t.Errorf("attachment %d = %+v", i, a.Spec)
		}
		if _, err := a.ConfList(); err != nil {
			t.Errorf("attachment %d config: %v", i, err)
		}
	}
	wantIP(t, sb, "net1", "192.168.1.7/24")
	if a := sb.Find("net2"); a.CapabilityArgs["mac"] != "02:00:00:01:01:21" {
		t.Errorf("net2 capability args = %v", a.CapabilityArgs)
	}
}
