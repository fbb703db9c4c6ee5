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
