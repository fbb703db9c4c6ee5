package nad

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/install"
)

func TestConfList(t *testing.T) {
	cases := []struct{ name, in, def, wantName, wantErr string }{
		{"single conf gets wrapped", `{"cniVersion":"0.3.1","name":"a","type":"macvlan"}`, "x", "a", ""},
		{"name injected", `{"cniVersion":"0.3.1","type":"macvlan"}`, "nad-name", "nad-name", ""},
		{"empty name injected", `{"cniVersion":"0.3.1","name":"","plugins":[{"type":"bridge"}]}`, "nad-name", "nad-name", ""},
		{"list kept", `{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge"},{"type":"tuning"}]}`, "x", "l", ""},
		{"no version", `{"name":"a","type":"macvlan"}`, "x", "", "no cniVersion"},
		{"not json", `{`, "x", "", "invalid CNI config JSON"},
		{"path type", `{"cniVersion":"1.0.0","name":"a","type":"/usr/bin/evil"}`, "x", "", "bare plugin name"},
		{"dotdot type", `{"cniVersion":"1.0.0","name":"a","type":".."}`, "x", "", "bare plugin name"},
		{"path ipam type", `{"cniVersion":"1.0.0","name":"a","type":"macvlan","ipam":{"type":"../host-local"}}`, "x", "", "ipam type"},
		{"path type in list", `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"a/b"}]}`, "x", "", "plugin 1"},
		{"missing type", `{"cniVersion":"1.0.0","name":"a"}`, "x", "", "missing 'type'"},
		{"empty plugins", `{"cniVersion":"1.0.0","name":"a","plugins":[]}`, "x", "", "no plugins"},
		{"self type", `{"cniVersion":"1.1.0","name":"a","type":"rewire","socketPath":"/run/rewire/rewire.sock"}`, "x", "", `type: "rewire" is Rewire's own plugin`},
		{"offline self type", `{"cniVersion":"1.1.0","name":"a","type":"rewire-offline"}`, "x", "", `type: "rewire-offline" is Rewire's own plugin`},
		{"self type in list", `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"rewire"}]}`, "x", "", "plugin 1: type"},
		{"self ipam type", `{"cniVersion":"1.0.0","name":"a","type":"macvlan","ipam":{"type":"rewire"}}`, "x", "", `ipam type: "rewire" is Rewire's own`},
		{"offline self ipam type", `{"cniVersion":"1.0.0","name":"a","type":"macvlan","ipam":{"type":"rewire-offline"}}`, "x", "", "must not delegate to Rewire itself"},
		{"similar name is fine", `{"cniVersion":"1.0.0","name":"a","type":"rewire-shim"}`, "x", "a", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			list, err := ConfList([]byte(c.in), c.def)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if list.Name != c.wantName || !strings.Contains(string(list.Bytes), `"plugins"`) {
				t.Errorf("got name %q bytes %s", list.Name, list.Bytes)
			}
		})
	}
}

func TestFindConfByNameStaysInDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-a.conf", `{"cniVersion":"0.3.1","name":"alpha","type":"bridge"}`)
	write("20-b.conflist", `{"cniVersion":"1.0.0","name":"beta","plugins":[{"type":"macvlan"}]}`)
	write("30-broken.conf", `{`)
	if l, err := FindConfByName(dir, "beta"); err != nil || l.Name != "beta" {
		t.Fatalf("beta: %v %v", l, err)
	}
	for _, name := range []string{"../etc/passwd", "10-a.conf", "gamma"} {
		if _, err := FindConfByName(dir, name); err == nil {
			t.Errorf("lookup of %q must fail (names are matched inside files, never used as paths)", name)
		}
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "n.conf"), []byte(`{"cniVersion":"0.3.1","name":"from-file","type":"bridge"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &NetworkAttachmentDefinition{}
	n.Name, n.Namespace = "from-file", "default"
	l, err := Resolve(n, dir, nil)
	if err != nil || l.Name != "from-file" {
		t.Fatalf("empty spec.config should load the file: %v %v", l, err)
	}
	n.Name = "missing"
	if _, err := Resolve(n, dir, nil); err == nil || !strings.Contains(err.Error(), "default/missing has no spec.config") {
		t.Errorf("error = %v", err)
	}
}

// An empty-config NAD is resolved through confDir only where the policy
// allows its namespace; the refusal comes before the file lookup.
func TestResolveConfDirPolicy(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "n.conf"), []byte(`{"cniVersion":"0.3.1","name":"private","type":"bridge"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	onlyAdmin := func(ns string) error {
		if ns != "kube-system" {
			return errors.New("not in this namespace")
		}
		return nil
	}
	cases := []struct {
		ns, name, config, wantErr string
	}{
		{"kube-system", "private", "", ""},
		{"team", "private", "", "team/private has no spec.config: not in this namespace"},
		{"team", "missing", "", "not in this namespace"},
		{"team", "inline", `{"cniVersion":"1.0.0","type":"macvlan"}`, ""},
	}
	for _, c := range cases {
		t.Run(c.ns+"/"+c.name, func(t *testing.T) {
			n := &NetworkAttachmentDefinition{Spec: Spec{Config: c.config}}
			n.Namespace, n.Name = c.ns, c.name
			l, err := Resolve(n, dir, onlyAdmin)
			if c.wantErr == "" {
				if err != nil || l.Name != c.name {
					t.Fatalf("got %v %v", l, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error = %v, want %q", err, c.wantErr)
			}
		})
	}
}

// Rewire's own conflist in confDir (what `rewired install` writes) cannot
// stand for a network: an empty-config NAD named after it gets a clear
// error naming the file, not a config that makes rewired call itself.
func TestResolveRefusesRewiresOwnConflist(t *testing.T) {
	dir, bin := t.TempDir(), t.TempDir()
	src := t.TempDir()
	plugin := filepath.Join(src, "plugin-to-install")
	for _, f := range []string{plugin, filepath.Join(src, install.GoPluginName)} {
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := install.Run(install.Options{Plugin: plugin, BinDir: bin, ConfDir: dir, Socket: "/run/rewire/rewire.sock"}); err != nil {
		t.Fatal(err)
	}
	own, err := os.ReadFile(filepath.Join(dir, "00-rewire.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct{ Name string }
	if err := json.Unmarshal(own, &conf); err != nil {
		t.Fatal(err)
	}
	n := &NetworkAttachmentDefinition{}
	n.Namespace, n.Name = "kube-system", conf.Name
	_, err = Resolve(n, dir, nil)
	if err == nil || !errors.Is(err, ErrSelfDelegation) || !strings.Contains(err.Error(), "00-rewire.conflist") {
		t.Fatalf("error = %v, want a self-delegation refusal naming the file", err)
	}
	// Inline, the same config is refused too.
	n.Spec.Config = string(own)
	if _, err := Resolve(n, dir, nil); !errors.Is(err, ErrSelfDelegation) {
		t.Fatalf("inline: error = %v", err)
	}
}

func TestLoadPathSkipsRewire(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "00-rewire.conflist"), []byte(`{"cniVersion":"1.1.0","name":"rw","plugins":[{"type":"rewire"}]}`), 0o644)
	os.WriteFile(filepath.Join(dir, "10-flannel.conflist"), []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644)
	l, err := LoadPath(dir, "rewire")
	if err != nil || l.Name != "cbr0" {
		t.Fatalf("got %v %v", l, err)
	}
}

// A Multus config left in the directory (thin or thick) is not the cluster
// network either.
func TestLoadPathSkipsMultus(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "00-multus.conf"), []byte(`{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim",
		"clusterNetwork":"/host/etc/cni/net.d/10-flannel.conflist","socketDir":"/host/run/multus/"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "01-multus.conf"), []byte(`{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",
		"delegates":[{"cniVersion":"0.3.1","name":"cbr0","type":"bridge"}]}`), 0o644)
	os.WriteFile(filepath.Join(dir, "10-flannel.conflist"), []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644)
	l, err := LoadPath(dir, "rewire")
	if err != nil || l.Name != "cbr0" || len(l.Plugins) != 1 || l.Plugins[0].Network.Type != "bridge" {
		t.Fatalf("got %v %v", l, err)
	}
}
