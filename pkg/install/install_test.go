package install

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestRunInstallsAtomicallyAndFirst(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "src-rewire")
	body := []byte("#!/bin/true\n")
	if err := os.WriteFile(plugin, body, 0o600); err != nil {
		t.Fatal(err)
	}
	goBody := []byte("#!/bin/false\n")
	if err := os.WriteFile(filepath.Join(dir, GoPluginName), goBody, 0o600); err != nil {
		t.Fatal(err)
	}
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(filepath.Join(conf, "10-flannel.conflist"), []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644)
	o := Options{Plugin: plugin, Offline: plugin, BinDir: bin, ConfDir: conf, Socket: "/run/rewire/rewire.sock"}
	for range 2 { // idempotent
		if err := Run(o); err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(filepath.Join(bin, "rewire"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("plugin: %v %v", st, err)
	}
	for name, want := range map[string][]byte{"rewire": body, OfflineName: body, GoPluginName: goBody} {
		if got, _ := os.ReadFile(filepath.Join(bin, name)); !bytes.Equal(got, want) {
			t.Errorf("%s: content differs", name)
		}
	}
	files, _ := libcni.ConfFiles(conf, []string{".conf", ".conflist", ".json"})
	if len(files) != 2 || filepath.Base(files[0]) != "00-rewire.conflist" {
		t.Fatalf("Rewire's config must sort first: %v", files)
	}
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil || list.Plugins[0].Network.Type != "rewire" || !list.Plugins[0].Network.Capabilities["portMappings"] ||
		!bytes.Contains(list.Bytes, []byte(`"stateDir": "/var/lib/rewire"`)) {
		t.Errorf("config: %+v %v", list, err)
	}
	for _, d := range []string{bin, conf} {
		tmps, _ := filepath.Glob(filepath.Join(d, ".*"))
		if len(tmps) != 0 {
			t.Errorf("temp files left: %v", tmps)
		}
	}
}

// Installed over Multus (deploy/over-multus: --conf-name
// 00-multus.conf,00-multus.conflist), Rewire's config replaces, in one
// rename, the file of Multus's the runtime reads (00-multus.conflist when
// Multus's thin entrypoint found a CNI 1.0.0 cluster network), in that
// file's format (a single config in a .conf file) and with its network
// name (the runtime's libcni cache of each pod is keyed by it).
func TestRunOverMultus(t *testing.T) {
	const (
		conf = `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim"}`
		list = `{"cniVersion":"1.0.0","name":"multus-net","plugins":[{"type":"multus","delegates":[]}]}`
	)
	for _, tc := range []struct {
		name     string
		multus   map[string]string // Multus's files
		replaced string            // the file Rewire's config is written as
		network  string            // its network name
	}{
		{"00-multus.conf", map[string]string{"00-multus.conf": conf}, "00-multus.conf", "multus-cni-network"},
		{"00-multus.conflist", map[string]string{"00-multus.conflist": list}, "00-multus.conflist", "multus-net"},
		{"both: the runtime reads 00-multus.conf", map[string]string{"00-multus.conf": conf, "00-multus.conflist": list},
			"00-multus.conf", "multus-cni-network"},
		{"neither", nil, "00-multus.conf", NetworkName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			plugin := filepath.Join(dir, "src-rewire")
			for _, f := range []string{plugin, filepath.Join(dir, GoPluginName)} {
				if err := os.WriteFile(f, []byte("#!/bin/true\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			bin, confDir := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
			if err := os.MkdirAll(confDir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range tc.multus {
				if err := os.WriteFile(filepath.Join(confDir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			o := Options{Plugin: plugin, BinDir: bin, ConfDir: confDir, ConfName: "00-multus.conf,00-multus.conflist", Socket: "/run/rewire/rewire.sock"}
			for range 2 { // idempotent: a restart of the init step keeps the name
				if err := Run(o); err != nil {
					t.Fatal(err)
				}
			}
			files, _ := libcni.ConfFiles(confDir, []string{".conf", ".conflist", ".json"})
			if want := max(len(tc.multus), 1); len(files) != want || filepath.Base(files[0]) != tc.replaced {
				t.Fatalf("conf files = %v, want %s first of %d", files, tc.replaced, want)
			}
			var c *libcni.NetworkConfigList
			var err error
			if filepath.Ext(files[0]) == ".conf" {
				var single *libcni.NetworkConfig
				if single, err = libcni.ConfFromFile(files[0]); err == nil {
					c, err = libcni.ConfListFromConf(single)
				}
			} else {
				c, err = libcni.ConfListFromFile(files[0])
			}
			if err != nil || len(c.Plugins) != 1 || c.Plugins[0].Network.Type != "rewire" || c.Name != tc.network || c.CNIVersion != "1.1.0" ||
				!c.Plugins[0].Network.Capabilities["portMappings"] || !bytes.Contains(c.Plugins[0].Bytes, []byte(`"stateDir":"/var/lib/rewire"`)) {
				t.Errorf("config: %+v %s %v", c, c.Plugins[0].Bytes, err)
			}
			for name, content := range tc.multus {
				if got, _ := os.ReadFile(filepath.Join(confDir, name)); name != tc.replaced && string(got) != content {
					t.Errorf("%s changed: %s", name, got)
				}
			}
		})
	}
}
