package config

import (
	"strings"
	"testing"
)

// auxiliaryCNIChainName names one directory next to the cluster network's
// config, in Rewire's config (YAML) and in Multus's (any case); a name that
// would lead elsewhere is refused at start.
func TestAuxiliaryCNIChainName(t *testing.T) {
	cases := []struct{ name, config, want, wantErr string }{
		{"unset", "clusterNetwork: x\n", "", ""},
		{"Rewire's config", "clusterNetwork: x\nauxiliaryCNIChainName: vendor-cni-chain\n", "vendor-cni-chain", ""},
		{"Multus's config", `{"type":"multus-shim","clusterNetwork":"/etc/cni/net.d/10-x.conf","auxiliaryCNIChainName":"vendor-cni-chain"}`,
			"vendor-cni-chain", ""},
		{"Multus's config, another case", `{"type":"multus-shim","clusterNetwork":"x","AuxiliaryCNIChainName":"chain"}`, "chain", ""},
		{"a path", "clusterNetwork: x\nauxiliaryCNIChainName: ../etc\n", "", `auxiliaryCNIChainName: "../etc" is not a single directory name`},
		{"a nested directory", "clusterNetwork: x\nauxiliaryCNIChainName: a/b\n", "", "not a single directory name"},
		{"dot", `{"type":"multus","clusterNetwork":"x","auxiliaryCNIChainName":"."}`, "", "not a single directory name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.config))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.AuxiliaryCNIChainName != c.want {
				t.Errorf("auxiliaryCNIChainName = %q, want %q", cfg.AuxiliaryCNIChainName, c.want)
			}
			for _, k := range cfg.Ignored {
				if strings.EqualFold(k, "auxiliaryCNIChainName") {
					t.Errorf("listed as ignored: %v", cfg.Ignored)
				}
			}
		})
	}
}
