package nad

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// clusterList is a cluster network as its config file holds it.
const clusterList = `{"cniVersion":"1.0.0","name":"cbr0","disableCheck":true,"plugins":[
	{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}},
	{"type":"portmap","capabilities":{"portMappings":true}}]}`

// The plugins chained to a network from files are appended after its own,
// its own directory's first (file name order), then the auxiliary chain's;
// everything else in the directories is left alone, and a broken file or a
// type Rewire refuses elsewhere is an error naming the file.
func TestWithChains(t *testing.T) {
	tuning := `{"type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_announce":"2"}}`
	cases := []struct {
		name      string
		list      string            // the network's config (clusterList when empty)
		files     map[string]string // under the config dir; a value "DIR" makes a directory
		auxiliary string
		want      []string // plugin types of the result
		wantErr   string   // the error names the file, and says this
		wantSelf  bool     // the error is a self-delegation refusal
	}{
		{name: "no chain directory", want: []string{"bridge", "portmap"}},
		{name: "an empty chain directory", files: map[string]string{"cbr0": "DIR"}, want: []string{"bridge", "portmap"}},
		{name: "plugins in file name order, after the network's own",
			files: map[string]string{"cbr0/50-tuning.conf": tuning, "cbr0/10-bandwidth.conf": `{"type":"bandwidth","capabilities":{"bandwidth":true}}`},
			want:  []string{"bridge", "portmap", "bandwidth", "tuning"}},
		{name: "only *.conf files, no subdirectories",
			files: map[string]string{"cbr0/50-tuning.conf": tuning, "cbr0/60-x.conflist": `{`, "cbr0/70-x.json": `{`,
				"cbr0/README": "not json", "cbr0/sub.conf": "DIR", "cbr0/50-tuning.conf.bak": `{`},
			want: []string{"bridge", "portmap", "tuning"}},
		{name: "another network's directory is not this one's",
			files: map[string]string{"other/50-tuning.conf": tuning}, want: []string{"bridge", "portmap"}},
		{name: "a single-plugin config gets its chain too", list: `{"cniVersion":"0.4.0","name":"cbr0","type":"ptp","ipam":{"type":"host-local","subnet":"10.2.0.0/24"}}`,
			files: map[string]string{"cbr0/50-tuning.conf": tuning}, want: []string{"ptp", "tuning"}},
		{name: "loadOnlyInlinedPlugins skips the network's own directory",
			list:  `{"cniVersion":"1.1.0","name":"cbr0","loadOnlyInlinedPlugins":true,"plugins":[{"type":"bridge"}]}`,
			files: map[string]string{"cbr0/50-tuning.conf": tuning}, want: []string{"bridge"}},
		{name: "the auxiliary chain comes after the network's own chain",
			files:     map[string]string{"cbr0/50-tuning.conf": tuning, "vendor-cni-chain/10-sbr.conf": `{"type":"sbr"}`},
			auxiliary: "vendor-cni-chain", want: []string{"bridge", "portmap", "tuning", "sbr"}},
		{name: "an auxiliary chain without a directory adds nothing", auxiliary: "vendor-cni-chain", want: []string{"bridge", "portmap"}},
		{name: "an auxiliary chain named like the network is read once",
			files: map[string]string{"cbr0/50-tuning.conf": tuning}, auxiliary: "cbr0", want: []string{"bridge", "portmap", "tuning"}},
		{name: "loadOnlyInlinedPlugins keeps the auxiliary chain",
			list:  `{"cniVersion":"1.1.0","name":"cbr0","loadOnlyInlinedPlugins":true,"plugins":[{"type":"bridge"}]}`,
			files: map[string]string{"cbr0/50-tuning.conf": tuning}, auxiliary: "cbr0", want: []string{"bridge", "tuning"}},
		{name: "a network name that is no directory name has no chain",
			list:  `{"cniVersion":"1.0.0","name":"..","plugins":[{"type":"bridge"}]}`,
			files: map[string]string{"50-tuning.conf": tuning}, want: []string{"bridge"}},

		{name: "unparsable file", files: map[string]string{"cbr0/10-ok.conf": tuning, "cbr0/50-bad.conf": `{"type":"tuning",`},
			wantErr: "cbr0/50-bad.conf: invalid JSON"},
		{name: "not an object", files: map[string]string{"cbr0/50-bad.conf": `["tuning"]`}, wantErr: "cbr0/50-bad.conf: invalid JSON"},
		{name: "null", files: map[string]string{"cbr0/50-bad.conf": `null`}, wantErr: "cbr0/50-bad.conf: not a JSON object"},
		{name: "no type", files: map[string]string{"cbr0/50-bad.conf": `{"mtu":1400}`}, wantErr: "cbr0/50-bad.conf: error parsing configuration: missing 'type'"},
		{name: "a config list", files: map[string]string{"cbr0/50-bad.conf": `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"tuning"}]}`},
			wantErr: "cbr0/50-bad.conf: a config list"},
		{name: "type a path", files: map[string]string{"cbr0/50-bad.conf": `{"type":"/usr/bin/tuning"}`},
			wantErr: `cbr0/50-bad.conf: type: "/usr/bin/tuning" must be a bare plugin name`},
		{name: "Rewire itself", files: map[string]string{"cbr0/50-self.conf": `{"type":"rewire","socketPath":"/run/rewire/rewire.sock"}`},
			wantErr: `cbr0/50-self.conf: type: "rewire" is Rewire's own plugin`, wantSelf: true},
		{name: "Rewire itself as IPAM", files: map[string]string{"cbr0/50-self.conf": `{"type":"macvlan","ipam":{"type":"rewire-offline"}}`},
			wantErr: `cbr0/50-self.conf: ipam type: "rewire-offline" is Rewire's own plugin`, wantSelf: true},
		{name: "Rewire itself in the auxiliary chain", files: map[string]string{"aux/50-self.conf": `{"type":"rewire"}`}, auxiliary: "aux",
			wantErr: `auxiliary CNI chain "aux": chained plugin`, wantSelf: true},
		{name: "the chain path is a file", files: map[string]string{"cbr0": `{"type":"tuning"}`}, wantErr: "reading chained plugins in"},
		{name: "an auxiliary chain name that is a path", auxiliary: "../etc", wantErr: `auxiliary CNI chain: "../etc" is not a single directory name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range c.files {
				writeChainFile(t, filepath.Join(dir, name), content)
			}
			raw := c.list
			if raw == "" {
				raw = clusterList
			}
			list, err := ConfList([]byte(raw), "")
			if err != nil {
				t.Fatal(err)
			}
			before := string(list.Bytes)
			got, err := WithChains(list, dir, c.auxiliary)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
				if errors.Is(err, ErrSelfDelegation) != c.wantSelf {
					t.Errorf("errors.Is(err, ErrSelfDelegation) = %v, want %v", !c.wantSelf, c.wantSelf)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if types := pluginTypes(got); strings.Join(types, " ") != strings.Join(c.want, " ") {
				t.Errorf("plugins = %v, want %v", types, c.want)
			}
			if string(list.Bytes) != before || len(list.Plugins) > len(got.Plugins) {
				t.Errorf("the network's own list changed: %s", list.Bytes)
			}
			// The recorded bytes hold the whole chain and the list's own keys.
			again, err := libcni.ConfListFromBytes(got.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(pluginTypes(again), " ") != strings.Join(c.want, " ") || again.Name != list.Name ||
				again.CNIVersion != list.CNIVersion || again.DisableCheck != list.DisableCheck {
				t.Errorf("Bytes re-parse as %s %s %v %v: %s", again.Name, again.CNIVersion, again.DisableCheck, pluginTypes(again), got.Bytes)
			}
		})
	}
}

// A chained plugin's config reaches the plugin as its file holds it (libcni
// adds the network's name and cniVersion when it runs it).
func TestWithChainsKeepsPluginConfig(t *testing.T) {
	dir := t.TempDir()
	writeChainFile(t, filepath.Join(dir, "cbr0", "50-tuning.conf"),
		`{"type":"tuning","mtu":1400,"sysctl":{"net.ipv4.conf.IFNAME.arp_announce":"2"},"capabilities":{"mac":true}}`)
	list, err := ConfList([]byte(clusterList), "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := WithChains(list, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(got.Bytes, &conf); err != nil {
		t.Fatal(err)
	}
	last := conf.Plugins[len(conf.Plugins)-1]
	if last["mtu"] != float64(1400) || last["sysctl"].(map[string]interface{})["net.ipv4.conf.IFNAME.arp_announce"] != "2" {
		t.Errorf("chained plugin = %v", last)
	}
	if !Capabilities(got)["mac"] || !Capabilities(got)["portMappings"] {
		t.Errorf("capabilities = %v, want the chained plugin's too", Capabilities(got))
	}
}

func TestChainName(t *testing.T) {
	for name, ok := range map[string]bool{"vendor-cni-chain": true, "cbr0": true, "k8s-pod-network": true, "a.b_c": true,
		"": false, ".": false, "..": false, "a/b": false, "/abs": false, `a\b`: false, "a\x00": false} {
		if err := ChainName(name); (err == nil) != ok {
			t.Errorf("ChainName(%q) = %v, want ok %v", name, err, ok)
		}
		if _, got := ChainDir("/etc/cni/net.d", name); got != ok {
			t.Errorf("ChainDir(%q) ok = %v, want %v", name, got, ok)
		}
	}
}

func pluginTypes(list *libcni.NetworkConfigList) []string {
	var out []string
	for _, p := range list.Plugins {
		out = append(out, p.Network.Type)
	}
	return out
}

// writeChainFile writes a file, or makes a directory for the content "DIR".
func writeChainFile(t *testing.T, path, content string) {
	t.Helper()
	if content == "DIR" {
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
