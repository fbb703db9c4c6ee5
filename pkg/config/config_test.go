package config

import (
	"encoding/json"
	"log/slog"
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

// Multus's own configuration files, in the shapes Multus's deployments and
// docs give them, are read as they are: the keys with a meaning for Rewire
// are applied, the others ignored and listed, never an error.
func TestParseMultusConfig(t *testing.T) {
	cases := []struct {
		name, config string
		want         func(*Config) string // "" when the config is as expected
		ignored      string
	}{
		{"thick daemon-config.json (multus-daemonset-thick.yml)", `{
			"chrootDir": "/hostroot",
			"cniVersion": "0.3.1",
			"logLevel": "verbose",
			"logToStderr": true,
			"cniConfigDir": "/host/etc/cni/net.d",
			"multusAutoconfigDir": "/host/etc/cni/net.d",
			"multusConfigFile": "auto",
			"socketDir": "/host/run/multus/"
		}`, func(c *Config) string {
			return expect(c.ClusterNetwork == "/host/etc/cni/net.d" && c.LogLevel == "verbose" && c.BinDirs[0] == "/opt/cni/bin")
		}, "chrootdir cniconfigdir cniversion logtostderr socketdir"},
		{"thick daemon-config.json with isolation, readiness file, per-node certificates", `{
			"cniVersion": "0.3.1",
			"chrootDir": "/hostroot",
			"logToStderr": true,
			"logLevel": "debug",
			"binDir": "/var/lib/cni/bin",
			"perNodeCertificate": {"enabled": true, "bootstrapKubeconfig": "/var/lib/kubelet/kubeconfig",
				"certDir": "/etc/cni/multus/certs", "certDuration": "24h"},
			"cniConfigDir": "/host/etc/cni/net.d",
			"multusConfigFile": "auto",
			"multusAutoconfigDir": "/host/run/multus/cni/net.d",
			"namespaceIsolation": true,
			"globalNamespaces": "default, openshift-multus,openshift-sriov-network-operator",
			"readinessindicatorfile": "/host/run/multus/cni/net.d/10-ovn-kubernetes.conf",
			"daemonSocketDir": "/run/multus/socket",
			"socketDir": "/host/run/multus/socket",
			"auxiliaryCNIChainName": "vendor-cni-chain",
			"metricsPort": 9091
		}`, func(c *Config) string {
			return expect(c.ClusterNetwork == "/host/run/multus/cni/net.d" && c.NamespaceIsolation &&
				strings.Join(c.GlobalNamespaces, " ") == "default openshift-multus openshift-sriov-network-operator" &&
				c.ReadinessIndicatorFile == "/host/run/multus/cni/net.d/10-ovn-kubernetes.conf" &&
				strings.Join(c.BinDirs, " ") == "/var/lib/cni/bin /opt/cni/bin" && c.LogLevel == "debug" &&
				c.AuxiliaryCNIChainName == "vendor-cni-chain")
		}, "chrootdir cniconfigdir cniversion daemonsocketdir logtostderr metricsport pernodecertificate socketdir"},
		{"thick daemon-config.json naming the master CNI", `{"cniConfigDir": "/host/etc/cni/net.d",
			"multusMasterCNI": "10-calico.conflist", "multusConfigFile": "auto"}`, func(c *Config) string {
			return expect(c.ClusterNetwork == "/host/etc/cni/net.d/10-calico.conflist")
		}, ""},
		{"thick 00-multus.conf (multus-shim)", `{"auxiliaryCNIChainName":"vendor-cni-chain","binDir":"/var/lib/cni/bin",
			"clusterNetwork":"/host/run/multus/cni/net.d/10-ovn-kubernetes.conf","cniVersion":"0.3.1",
			"daemonSocketDir":"/run/multus/socket","globalNamespaces":"default,openshift-multus","logLevel":"verbose",
			"logToStderr":true,"name":"multus-cni-network","namespaceIsolation":true,"type":"multus-shim"}`, func(c *Config) string {
			return expect(c.ClusterNetwork == "/host/run/multus/cni/net.d/10-ovn-kubernetes.conf" && c.ClusterNetworkConfig == nil &&
				strings.Join(c.GlobalNamespaces, ",") == "default,openshift-multus" && c.BinDirs[0] == "/var/lib/cni/bin" &&
				c.AuxiliaryCNIChainName == "vendor-cni-chain")
		}, "cniversion daemonsocketdir logtostderr name type"},
		{"thin 00-multus.conf with a delegate (multus-daemonset.yml)", `{
			"cniVersion": "0.3.1",
			"name": "multus-cni-network",
			"type": "multus",
			"capabilities": {"portMappings": true},
			"kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
			"delegates": [{"name": "default-cni-network", "plugins": [
				{"type": "flannel", "name": "flannel.1", "delegate": {"isDefaultGateway": true, "hairpinMode": true}},
				{"type": "portmap", "capabilities": {"portMappings": true}}]}]
		}`, func(c *Config) string {
			var d struct {
				CNIVersion string            `json:"cniVersion"`
				Plugins    []json.RawMessage `json:"plugins"`
			}
			_ = json.Unmarshal(c.ClusterNetworkConfig, &d)
			return expect(c.ClusterNetwork == "default-cni-network" && d.CNIVersion == "0.3.1" && len(d.Plugins) == 2)
		}, "capabilities cniversion kubeconfig name type"},
		{"thin 00-multus.conflist (the entrypoint's, for a CNI 1.0.0 cluster network), istio-cni chained", `{
			"cniVersion": "1.0.0",
			"name": "multus-cni-network",
			"plugins": [ {
				"type": "multus",
				"capabilities": {"ips":true,"portMappings":true},
				"cniConf": "/host/etc/cni/multus/net.d",
				"binDir": "/host/opt/cni/bin",
				"kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
				"delegates": [
					{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","ipam":{"type":"host-local"}}]}
				]
			}, {"type": "istio-cni"}]
		}`, func(c *Config) string {
			var d struct {
				CNIVersion string            `json:"cniVersion"`
				Plugins    []json.RawMessage `json:"plugins"`
			}
			_ = json.Unmarshal(c.ClusterNetworkConfig, &d)
			return expect(c.ClusterNetwork == "cbr0" && d.CNIVersion == "1.0.0" && len(d.Plugins) == 1 && c.BinDirs[0] == "/host/opt/cni/bin")
		}, "capabilities cniconf cniversion kubeconfig name plugins[1:] (1 plugins chained after Multus in its config list) type"},
		{"thin 00-multus.conf with two delegates", `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",
			"delegates":[{"cniVersion":"0.3.1","name":"weave","type":"weave-net"},{"cniVersion":"0.3.1","name":"mv","type":"macvlan"}]}`,
			func(c *Config) string { return expect(c.ClusterNetwork == "weave" && c.ClusterNetworkConfig != nil) },
			"cniversion delegates[1:] (1 networks: declare them as NADs in defaultNetworks) name type"},
		{"the configuration reference (docs/configuration.md)", `{
			"name": "node-cni-network",
			"type": "multus",
			"kubeconfig": "/etc/kubernetes/node-kubeconfig.yaml",
			"confDir": "/etc/cni/multus/net.d",
			"cniDir": "/var/lib/cni/multus",
			"binDir": "/opt/cni/bin",
			"LogFile": "/var/log/multus.log",
			"LogLevel": "debug",
			"capabilities": {"portMappings": true},
			"readinessindicatorfile": "",
			"namespaceIsolation": false,
			"Note1": "NOTE: you can set clusterNetwork+defaultNetworks OR delegates!!",
			"clusterNetwork": "defaultCRD",
			"defaultNetworks": ["sidecarCRD", "flannel"],
			"systemNamespaces": ["kube-system", "admin"],
			"multusNamespace": "kube-system",
			"retryDeleteOnError": true,
			"delegates": [{"type": "weave-net", "hairpinMode": true}]
		}`, func(c *Config) string {
			return expect(c.ClusterNetwork == "defaultCRD" && c.ClusterNetworkConfig == nil && c.ConfDir == "/etc/cni/multus/net.d" &&
				strings.Join(c.DefaultNetworks, ",") == "sidecarCRD,flannel" && strings.Join(c.SystemNamespaces, ",") == "kube-system,admin" &&
				c.LogLevel == "debug" && strings.Join(c.BinDirs, ",") == "/opt/cni/bin" && c.CNIDir == "/var/lib/cni/multus")
		}, "capabilities delegates kubeconfig logfile name note1 retrydeleteonerror type"},
		{"Rewire's config in YAML, with Multus's globalNamespaces string", "clusterNetwork: x\nglobalNamespaces: a,b\n",
			func(c *Config) string { return expect(strings.Join(c.GlobalNamespaces, " ") == "a b") }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.config))
			if err != nil {
				t.Fatal(err)
			}
			if msg := c.want(cfg); msg != "" {
				t.Errorf("config = %+v", cfg)
			}
			if got := strings.Join(cfg.Ignored, " "); got != c.ignored {
				t.Errorf("ignored = %q\nwant      %q", got, c.ignored)
			}
		})
	}
}

func expect(ok bool) string {
	if ok {
		return ""
	}
	return "not as expected"
}

// Multus's log levels map onto the daemon's; a level neither knows is an
// error.
func TestLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"": slog.LevelInfo, "verbose": slog.LevelInfo, "debug": slog.LevelDebug,
		"panic": slog.LevelError, "error": slog.LevelError, "warn": slog.LevelWarn, "Info": slog.LevelInfo} {
		if got, err := (&Config{LogLevel: in}).Level(); err != nil || got != want {
			t.Errorf("Level(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := Parse([]byte("clusterNetwork: x\nlogLevel: loud\n")); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Errorf("logLevel loud: %v", err)
	}
}

// Self-GC's keys: containerd's socket, 5m and 2m by default, dry-run off;
// criSocket "" or "off" turns it off; negative durations are refused.
func TestSelfGCKeys(t *testing.T) {
	cases := []struct {
		name, config    string
		endpoint        string
		interval, grace time.Duration
		dryRun          bool
		err             string
	}{
		{"defaults", "", DefaultCRISocket, 5 * time.Minute, 2 * time.Minute, false, ""},
		{"set", "criSocket: /run/crio/crio.sock\ngcInterval: 30s\ngcGrace: 10m\ngcDryRun: true\n", "/run/crio/crio.sock", 30 * time.Second, 10 * time.Minute, true, ""},
		{"off", "criSocket: \"off\"\n", "", 5 * time.Minute, 2 * time.Minute, false, ""},
		{"empty", "criSocket: \"\"\n", "", 5 * time.Minute, 2 * time.Minute, false, ""},
		{"negative grace", "gcGrace: -1m\n", "", 0, 0, false, "must not be negative"},
		{"bad interval", "gcInterval: often\n", "", 0, 0, false, "invalid duration"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte("clusterNetwork: x\n" + c.config))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Parse = %v, want an error with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.CRIEndpoint(); got != c.endpoint {
				t.Errorf("CRIEndpoint() = %q, want %q", got, c.endpoint)
			}
			if cfg.GCInterval.Duration != c.interval || cfg.GCGrace.Duration != c.grace || cfg.GCDryRun != c.dryRun {
				t.Errorf("gcInterval %s, gcGrace %s, gcDryRun %v; want %s, %s, %v",
					cfg.GCInterval, cfg.GCGrace, cfg.GCDryRun, c.interval, c.grace, c.dryRun)
			}
		})
	}
}
