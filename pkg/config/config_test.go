package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte("clusterNetwork: /etc/cni/net.d\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MultusNamespace != "kube-system" || c.SystemNamespaces[0] != "kube-system" || c.GlobalNamespaces[0] != "default" ||
		c.BinDirs[0] != "/opt/cni/bin" || c.StoreSync || !*c.AddedInterfaceEvents || c.PodWait.Duration != 2*time.Second {
		t.Errorf("defaults = %+v", c)
	}
}

func TestParseJSONAndErrors(t *testing.T) {
	c, err := Parse([]byte(`{"clusterNetwork":"cni0","namespaceIsolation":true,"globalNamespaces":["shared"],"podWait":"500ms","storeSync":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NamespaceAllowed("a", "b") || !c.NamespaceAllowed("a", "a") || !c.NamespaceAllowed("a", "shared") ||
		!c.StoreSync || c.PodWait.Duration != 500*time.Millisecond {
		t.Errorf("config = %+v", c)
	}
	for in, want := range map[string]string{
		"defaultNetworks: []\n":                 "clusterNetwork is required",
		"clusterNetwork: x\nnoSuchKey: 1\n":     "noSuchKey",
		"clusterNetwork: x\npodWait: forever\n": "invalid duration",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
}

// Under namespace isolation a NAD without spec.config (a file in confDir)
// is honoured only in the Multus namespace and the global namespaces.
func TestConfDirAllowed(t *testing.T) {
	cases := []struct {
		name, config, ns string
		allowed          bool
	}{
		{"no isolation: any namespace", "clusterNetwork: x\n", "team", true},
		{"isolation: multus namespace", "clusterNetwork: x\nnamespaceIsolation: true\n", "kube-system", true},
		{"isolation: default global namespace", "clusterNetwork: x\nnamespaceIsolation: true\n", "default", true},
		{"isolation: configured global namespace", "clusterNetwork: x\nnamespaceIsolation: true\nglobalNamespaces: [shared]\n", "shared", true},
		{"isolation: tenant namespace", "clusterNetwork: x\nnamespaceIsolation: true\n", "team", false},
		{"isolation: default no longer global", "clusterNetwork: x\nnamespaceIsolation: true\nglobalNamespaces: [shared]\n", "default", false},
		{"isolation: own multus namespace", "clusterNetwork: x\nnamespaceIsolation: true\nmultusNamespace: rw-system\n", "kube-system", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.config))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.ConfDirAllowed(c.ns)
			if c.allowed != (err == nil) {
				t.Fatalf("ConfDirAllowed(%q) = %v, want allowed %v", c.ns, err, c.allowed)
			}
			if err != nil && (!strings.Contains(err.Error(), "namespaceIsolation") || !strings.Contains(err.Error(), "spec.config") ||
				!strings.Contains(err.Error(), `"`+c.ns+`"`)) {
				t.Errorf("the refusal must say why and what to do: %v", err)
			}
		})
	}
}
