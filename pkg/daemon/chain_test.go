package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/planner"
)

// The cluster network gets the plugins of its chain directory, next to its
// config, and of the auxiliary chain, whichever way clusterNetwork names it:
// a file, a directory (its first config), delegates[0] of a Multus config
// or a NAD (both from confDir).
func TestClusterNetworkChains(t *testing.T) {
	const conflist = `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0"}]}`
	cases := []struct {
		name    string
		config  func(confDir, netDir string) string
		inNAD   bool // the cluster network is the NAD kube-system/cbr0
		inline  bool // its config is no file: its chains are in confDir
		aux     bool // the auxiliary chain "vendor" has a plugin
		want    string
		wantErr string
	}{
		{name: "a file", config: func(_, netDir string) string {
			return "clusterNetwork: " + filepath.Join(netDir, "10-cbr0.conflist")
		}, want: "bridge tuning"},
		{name: "a directory", config: func(_, netDir string) string { return "clusterNetwork: " + netDir }, want: "bridge tuning"},
		{name: "a directory, with the auxiliary chain", config: func(_, netDir string) string {
			return "clusterNetwork: " + netDir + "\nauxiliaryCNIChainName: vendor"
		}, aux: true, want: "bridge tuning sbr"},
		{name: "Multus's auxiliaryCNIChainName", config: func(_, netDir string) string {
			return fmt.Sprintf(`{"type":"multus-shim","clusterNetwork":%q,"auxiliaryCNIChainName":"vendor"}`, filepath.Join(netDir, "10-cbr0.conflist"))
		}, aux: true, want: "bridge tuning sbr"},
		{name: "delegates[0], chained from confDir", config: func(confDir, _ string) string {
			return fmt.Sprintf(`{"type":"multus","confDir":%q,"auxiliaryCNIChainName":"vendor","delegates":[%s]}`, confDir, conflist)
		}, inline: true, aux: true, want: "bridge tuning sbr"},
		{name: "a NAD, chained from confDir", config: func(confDir, _ string) string {
			return "clusterNetwork: cbr0\nconfDir: " + confDir + "\nauxiliaryCNIChainName: vendor"
		}, inNAD: true, inline: true, aux: true, want: "bridge tuning sbr"},
		{name: "a broken chained plugin", config: func(_, netDir string) string {
			return "clusterNetwork: " + netDir + "\nauxiliaryCNIChainName: vendor"
		}, aux: true, wantErr: "vendor/10-sbr.conf: invalid JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			confDir, netDir := filepath.Join(base, "net.d"), filepath.Join(base, "run", "net.d")
			dir := netDir // where the cluster network's config is, hence its chains
			if c.inline {
				dir = confDir
			}
			writeFile(t, filepath.Join(netDir, "10-cbr0.conflist"), conflist)
			writeFile(t, filepath.Join(dir, "cbr0", "50-tuning.conf"), `{"type":"tuning","mtu":1400}`)
			if c.aux {
				sbr := `{"type":"sbr"}`
				if c.wantErr != "" {
					sbr = `{"type":`
				}
				writeFile(t, filepath.Join(dir, "vendor", "10-sbr.conf"), sbr)
			}
			cfg, err := config.Parse([]byte(c.config(confDir, netDir)))
			if err != nil {
				t.Fatal(err)
			}
			nads := fakeNADs{"kube-system/cbr0": conflist}
			d := &Daemon{Config: cfg, Networks: ClusterChainLookup(cfg, nads.lookup)}
			list, err := d.ClusterNetwork()
			if err == nil && c.inNAD {
				if list != nil {
					t.Fatalf("ClusterNetwork() = %s for a NAD", list.Bytes)
				}
				var n *planner.Network
				if n, err = d.Networks("kube-system", "cbr0"); err == nil {
					list = n.ConfList
				}
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := typesOf(list); got != c.want {
				t.Errorf("cluster network plugins = %s, want %s", got, c.want)
			}
		})
	}
}

// Only the cluster network's NAD is chained, and the lookup's Network (which
// it may memoise) is never changed; a chain error names the NAD and is no
// "not found".
func TestClusterChainLookup(t *testing.T) {
	confDir := t.TempDir()
	writeFile(t, filepath.Join(confDir, "cbr0", "50-tuning.conf"), `{"type":"tuning"}`)
	writeFile(t, filepath.Join(confDir, "mv", "50-tuning.conf"), `{"type":"tuning"}`)
	cfg, err := config.Parse([]byte("clusterNetwork: cbr0\nconfDir: " + confDir))
	if err != nil {
		t.Fatal(err)
	}
	nads := fakeNADs{
		"kube-system/cbr0": `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`,
		"default/cbr0":     `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`,
		"kube-system/mv":   `{"cniVersion":"1.0.0","name":"mv","type":"macvlan"}`,
	}
	memo := map[string]*planner.Network{}
	lookup := ClusterChainLookup(cfg, func(ns, name string) (*planner.Network, error) {
		if n, ok := memo[ns+"/"+name]; ok {
			return n, nil
		}
		n, err := nads.lookup(ns, name)
		memo[ns+"/"+name] = n
		return n, err
	})
	for i := 0; i < 2; i++ {
		for key, want := range map[string]string{"kube-system/cbr0": "bridge tuning", "default/cbr0": "bridge", "kube-system/mv": "macvlan"} {
			ns, name, _ := strings.Cut(key, "/")
			n, err := lookup(ns, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := typesOf(n.ConfList); got != want || n.Key != key {
				t.Errorf("%s = %s %s, want %s", key, n.Key, got, want)
			}
		}
	}
	if got := typesOf(memo["kube-system/cbr0"].ConfList); got != "bridge" {
		t.Errorf("the memoised NAD became %s", got)
	}
	if _, err := lookup("kube-system", "absent"); !errors.Is(err, planner.ErrNotFound) {
		t.Errorf("a missing NAD: %v", err)
	}
	writeFile(t, filepath.Join(confDir, "cbr0", "60-self.conf"), `{"type":"rewire"}`)
	_, err = lookup("kube-system", "cbr0")
	if !errors.Is(err, nad.ErrSelfDelegation) || errors.Is(err, planner.ErrNotFound) ||
		!strings.Contains(err.Error(), "NetworkAttachmentDefinition kube-system/cbr0") || !strings.Contains(err.Error(), "60-self.conf") {
		t.Errorf("self-delegating chain: %v", err)
	}

	// With the cluster network in a file, a NAD of its name is just a NAD.
	cfg.ClusterNetwork = filepath.Join(confDir, "10-cbr0.conflist")
	n, err := ClusterChainLookup(cfg, nads.lookup)("kube-system", "cbr0")
	if err != nil || typesOf(n.ConfList) != "bridge" {
		t.Errorf("NAD kube-system/cbr0 with a file cluster network = %v %v", n, err)
	}
}

// fakeNADs resolves NADs from their spec.config, keyed namespace/name.
type fakeNADs map[string]string

func (f fakeNADs) lookup(ns, name string) (*planner.Network, error) {
	raw, ok := f[ns+"/"+name]
	if !ok {
		return nil, fmt.Errorf("NetworkAttachmentDefinition %s/%s %w", ns, name, planner.ErrNotFound)
	}
	list, err := nad.ConfList([]byte(raw), name)
	if err != nil {
		return nil, err
	}
	return &planner.Network{Key: ns + "/" + name, ConfList: list}, nil
}

func typesOf(list *libcni.NetworkConfigList) string {
	var out []string
	for _, p := range list.Plugins {
		out = append(out, p.Network.Type)
	}
	return strings.Join(out, " ")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
