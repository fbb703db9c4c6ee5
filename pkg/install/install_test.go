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
	for _, name := range []string{"rewire", OfflineName} {
		if got, _ := os.ReadFile(filepath.Join(bin, name)); !bytes.Equal(got, body) {
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

// Installed over Multus's 00-multus.conf (deploy/over-multus), Rewire's
// config replaces it in one rename and is read as a single network config.
func TestRunOverMultusConf(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "src-rewire")
	if err := os.WriteFile(plugin, []byte("#!/bin/true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	multus := filepath.Join(conf, "00-multus.conf")
	if err := os.WriteFile(multus, []byte(`{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Run(Options{Plugin: plugin, BinDir: bin, ConfDir: conf, ConfName: "00-multus.conf", Socket: "/run/rewire/rewire.sock"}); err != nil {
		t.Fatal(err)
	}
	files, _ := libcni.ConfFiles(conf, []string{".conf", ".conflist", ".json"})
	if len(files) != 1 || files[0] != multus {
		t.Fatalf("conf files = %v, want Multus's file only", files)
	}
	c, err := libcni.ConfFromFile(multus)
	if err != nil || c.Network.Type != "rewire" || c.Network.Name != "rewire-cni-network" || c.Network.CNIVersion != "1.1.0" ||
		!c.Network.Capabilities["portMappings"] || !bytes.Contains(c.Bytes, []byte(`"stateDir": "/var/lib/rewire"`)) {
		t.Errorf("config: %+v %s %v", c.Network, c.Bytes, err)
	}
}
