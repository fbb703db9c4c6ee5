package planner

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// networks is an in-memory NAD set: namespace/name -> CNI config.
var networks = map[string]string{
	"kube-system/cluster": `{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}`,
	"kube-system/extra":   `{"cniVersion":"1.0.0","name":"extra","type":"macvlan"}`,
	"default/mv":          `{"cniVersion":"0.3.1","name":"mv","type":"macvlan"}`,
	"default/caps": `{"cniVersion":"1.0.0","name":"caps","plugins":[{"type":"macvlan","capabilities":{"ips":true,"infinibandGUID":true}},
		{"type":"tuning","capabilities":{"mac":true}},{"type":"portmap","capabilities":{"portMappings":true}},
		{"type":"bandwidth","capabilities":{"bandwidth":true}}]}`,
	"other/shared": `{"cniVersion":"1.0.0","name":"shared","type":"macvlan"}`,
	"team/mine":    `{"cniVersion":"1.0.0","name":"mine","type":"macvlan"}`,
	"default/dev":  `{"cniVersion":"1.0.0","name":"dev","type":"sriov"}`,
	// Multus's issue: a NAD no plugin of which declares ips or mac.
	"default/static": `{"cniVersion":"0.4.0","plugins":[{"type":"macvlan","master":"eth1","mode":"bridge","ipam":{"type":"static"}}]}`,
	"default/tuned": `{"cniVersion":"1.0.0","name":"tuned","plugins":[{"type":"macvlan","ipam":{"type":"static"}},
		{"type":"tuning","capabilities":{"mac":true}}]}`,
	// Primary networks of the same name in the Multus namespace and a pod's.
	"kube-system/alt":    `{"cniVersion":"1.0.0","name":"alt","type":"bridge"}`,
	"team/alt":           `{"cniVersion":"1.0.0","name":"alt-team","type":"bridge"}`,
	"team/own":           `{"cniVersion":"1.0.0","name":"own","type":"bridge"}`,
	"kube-system/broken": `{"cniVersion":"1.0.0","name":"broken","type":"../bridge"}`,
	"team/broken":        `{"cniVersion":"1.0.0","name":"broken","type":"bridge"}`,
}

func lookup(ns, name string) (*Network, error) {
	raw, ok := networks[ns+"/"+name]
	if !ok {
		return nil, fmt.Errorf("NetworkAttachmentDefinition %s/%s %w", ns, name, ErrNotFound)
	}
	list, err := nad.ConfList([]byte(raw), name)
	if err != nil {
		return nil, err
	}
	n := &Network{Key: ns + "/" + name, ConfList: list}
	if name == "dev" {
		n.ResourceName = "example.com/vf"
	}
	return n, nil
}

func cfg(mod func(*config.Config)) *config.Config {
	c, err := config.Parse([]byte("clusterNetwork: cluster\n"))
	if err != nil {
		panic(err)
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func plan(c *config.Config, ns string, ann map[string]string) ([]attachment.Spec, error) {
	return Plan(Input{Pod: Pod{Namespace: ns, Name: "p", Annotations: ann}, Config: c, IfName: "eth0",
		RuntimeArgs: map[string]interface{}{"portMappings": []int{1}}, Lookup: lookup})
}

func summary(specs []attachment.Spec) string {
	var s []string
	for _, a := range specs {
		s = append(s, a.Network+"@"+a.IfName)
	}
	return strings.Join(s, " ")
}

func TestPlanNamesAndOrder(t *testing.T) {
	cases := []struct {
		name, ns, networks string
		mod                func(*config.Config)
		want               string
	}{
		{"cluster only", "default", "", nil, "kube-system/cluster@eth0"},
		{"seed", "default", "mv", nil, "kube-system/cluster@eth0 default/mv@net1"},
		{"netN in order", "default", "mv,mv,mv", nil, "kube-system/cluster@eth0 default/mv@net1 default/mv@net2 default/mv@net3"},
		{"explicit names win, netN skips them", "default", "mv@net1,mv,mv@x", nil,
			"kube-system/cluster@eth0 default/mv@net1 default/mv@net2 default/mv@x"},
		{"default networks first", "default", "mv", func(c *config.Config) { c.DefaultNetworks = []string{"extra"} },
			"kube-system/cluster@eth0 kube-system/extra@net1 default/mv@net2"},
		{"system namespace gets no default networks", "kube-system", "", func(c *config.Config) { c.DefaultNetworks = []string{"extra"} },
			"kube-system/cluster@eth0"},
		{"isolation allows own and global namespaces", "team", "mine,default/mv", func(c *config.Config) { c.NamespaceIsolation = true },
			"kube-system/cluster@eth0 team/mine@net1 default/mv@net2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			specs, err := plan(cfg(c.mod), c.ns, map[string]string{selection.NetworksAnnotation: c.networks})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(specs); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			if !specs[0].Primary || specs[0].CapabilityArgs["portMappings"] == nil {
				t.Errorf("primary must carry the runtime's args: %+v", specs[0])
			}
			for _, s := range specs[1:] {
				if s.Primary || s.CapabilityArgs["portMappings"] != nil {
					t.Errorf("runtime args leaked to a secondary: %+v", s)
				}
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	isolated := func(c *config.Config) { c.NamespaceIsolation = true }
	strict := func(c *config.Config) { c.StrictCapabilities = true }
	cases := []struct {
		name, ns string
		ann      map[string]string
		mod      func(*config.Config)
		want     string
	}{
		{"unknown network", "default", map[string]string{selection.NetworksAnnotation: "nope"}, nil, "default/nope: NetworkAttachmentDefinition default/nope not found"},
		{"malformed", "default", map[string]string{selection.NetworksAnnotation: "[{"}, nil, "invalid JSON"},
		{"forbidden namespace", "team", map[string]string{selection.NetworksAnnotation: "other/shared"}, isolated, "namespace isolation"},
		{"forbidden default-network override", "team", map[string]string{selection.DefaultNetworkAnnotation: "other/shared"}, isolated, "namespace isolation"},
		{"duplicate ifname", "default", map[string]string{selection.NetworksAnnotation: "mv@a,mv@a"}, nil, `interface name "a" requested by both`},
		{"duplicate of primary", "default", map[string]string{selection.NetworksAnnotation: "mv@eth0"}, nil, `interface name "eth0"`},
		{"ips without capability, strict", "default", map[string]string{selection.NetworksAnnotation: `[{"name":"mv","ips":["10.0.0.1/24"]}]`}, strict, `"ips" capability (strictCapabilities`},
		{"mac without capability, strict", "default", map[string]string{selection.NetworksAnnotation: `[{"name":"mv","mac":"02:00:00:00:00:01"}]`}, strict, `"mac" capability (strictCapabilities`},
		{"bandwidth without capability", "default", map[string]string{selection.NetworksAnnotation: `[{"name":"mv","bandwidth":{"ingressRate":1}}]`}, nil, `"bandwidth" capability`},
		{"portMappings without capability", "default", map[string]string{selection.NetworksAnnotation: `[{"name":"mv","portMappings":[{"hostPort":1,"containerPort":2}]}]`}, nil, `"portMappings" capability`},
		{"infiniband without capability", "default", map[string]string{selection.NetworksAnnotation: `[{"name":"mv","infiniband-guid":"x"}]`}, nil, `"infinibandGUID" capability`},
		{"two default routes", "default", map[string]string{selection.NetworksAnnotation: `[{"name":"mv","default-route":["10.0.0.1"]},{"name":"mv","default-route":["10.0.0.2"]}]`}, nil, "more than one network"},
		{"missing default network", "default", nil, func(c *config.Config) { c.DefaultNetworks = []string{"gone"} }, "default network kube-system/gone"},
		{"missing cluster network", "default", nil, func(c *config.Config) { c.ClusterNetwork = "gone" }, "cluster network"},
		{"missing default-network override", "team", map[string]string{selection.DefaultNetworkAnnotation: "gone"}, nil,
			`network "gone" (no namespace given: looked up in multusNamespace kube-system, then in the pod's namespace team): ` +
				"NetworkAttachmentDefinition kube-system/gone not found; NetworkAttachmentDefinition team/gone not found"},
		{"broken default-network override is not skipped", "team", map[string]string{selection.DefaultNetworkAnnotation: "broken"}, nil,
			"network kube-system/broken: "},
		{"default-network override with ips", "team", map[string]string{selection.DefaultNetworkAnnotation: `[{"name":"alt","ips":["10.0.0.1/24"]}]`}, nil,
			"only name and namespace"},
		{"cni-args key not allowed", "default", map[string]string{selection.NetworksAnnotation: `[{"name":"mv","cni-args":{"evil":1}}]`},
			func(c *config.Config) { c.CNIArgsAllowlist = []string{"ok"} }, `cni-args key "evil" is not allowed`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := plan(cfg(c.mod), c.ns, c.ann)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one containing %q", err, c.want)
			}
			var pe *Error
			if c.name != "missing cluster network" && c.name != "missing default network" && !errors.As(err, &pe) {
				t.Errorf("a bad pod annotation must be a *planner.Error: %T", err)
			}
		})
	}
}

func TestPlanCapabilitiesAndArgs(t *testing.T) {
	specs, err := plan(cfg(nil), "default", map[string]string{selection.NetworksAnnotation: `[{"name":"caps",
		"ips":["10.1.1.5/24"],"mac":"02:00:00:00:00:09","portMappings":[{"hostPort":8080,"containerPort":80}],
		"bandwidth":{"ingressRate":100,"ingressBurst":10,"egressRate":100,"egressBurst":10},"infiniband-guid":"g",
		"cni-args":{"foo":"bar"},"deviceID":"0000:01:00.0","default-route":["10.1.1.1"]}]`})
	if err != nil {
		t.Fatal(err)
	}
	s := specs[1]
	for _, k := range []string{"ips", "mac", "portMappings", "bandwidth", "infinibandGUID"} {
		if s.CapabilityArgs[k] == nil {
			t.Errorf("capability %s not passed: %+v", k, s.CapabilityArgs)
		}
	}
	if !reflect.DeepEqual(s.DefaultRoute, []string{"10.1.1.1"}) || s.DeviceID != "0000:01:00.0" {
		t.Errorf("spec = %+v", s)
	}
	list, err := libcni.ConfListFromBytes(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Plugins {
		var m struct {
			Args     map[string]map[string]string `json:"args"`
			DeviceID string                       `json:"deviceID"`
		}
		if err := json.Unmarshal(p.Bytes, &m); err != nil {
			t.Fatal(err)
		}
		if m.Args["cni"]["foo"] != "bar" || m.DeviceID != "0000:01:00.0" {
			t.Errorf("plugin %s did not get cni-args and deviceID: %s", p.Network.Type, p.Bytes)
		}
	}
}

func TestPlanResourceName(t *testing.T) {
	specs, err := plan(cfg(nil), "default", map[string]string{selection.NetworksAnnotation: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if specs[1].ResourceName != "example.com/vf" || specs[1].DeviceID != "" {
		t.Errorf("spec = %+v", specs[1])
	}
}

func TestPlanClusterNetworkFromFile(t *testing.T) {
	list, err := nad.ConfList([]byte(`{"cniVersion":"1.0.0","name":"file-net","type":"bridge"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	specs, err := Plan(Input{Pod: Pod{Namespace: "default"}, Config: cfg(nil), ClusterNetwork: list, IfName: "eth0", Lookup: lookup})
	if err != nil {
		t.Fatal(err)
	}
	if specs[0].Network != "file-net" || string(specs[0].Config) != string(list.Bytes) {
		t.Errorf("primary = %+v", specs[0])
	}
}

// Names stay stable across edits of a running pod's annotation.
func TestSecondariesKeepRecordedNames(t *testing.T) {
	c := cfg(nil)
	recorded := []attachment.Spec{
		{Network: "kube-system/cluster", IfName: "eth0", Primary: true},
		{Network: "default/mv", IfName: "net1"},
		{Network: "default/caps", IfName: "net2"},
	}
	cases := []struct{ networks, want string }{
		{"caps", "default/caps@net2"},
		{"dev,caps", "default/dev@net1 default/caps@net2"},
		{"caps,mv", "default/caps@net2 default/mv@net1"},
		{"mv,mv", "default/mv@net1 default/mv@net2"},
		{"mv@net2,caps", "default/mv@net2 default/caps@net1"},
		{`[{"name":"mv","bandwidth":{"ingressRate":1}}]`, ""}, // mv lacks the bandwidth capability
	}
	for _, tc := range cases {
		t.Run(tc.networks, func(t *testing.T) {
			specs, err := Secondaries(Input{Pod: Pod{Namespace: "default", Annotations: map[string]string{selection.NetworksAnnotation: tc.networks}},
				Config: c, IfName: "eth0", Lookup: lookup}, recorded)
			if tc.want == "" {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(specs); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSelectionChangeIsVisible(t *testing.T) {
	plan := func(ann string) string {
		specs, err := Secondaries(Input{Pod: Pod{Namespace: "default", Annotations: map[string]string{selection.NetworksAnnotation: ann}},
			Config: cfg(nil), IfName: "eth0", Lookup: lookup}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return specs[0].Selection
	}
	a := plan(`[{"name":"caps","ips":["10.0.0.1/24"]}]`)
	if a == plan(`[{"name":"caps","ips":["10.0.0.2/24"]}]`) {
		t.Error("a change of ips must change the selection")
	}
	if a != plan(`[{"name":"caps","ips":["10.0.0.1/24"],"interface":"x"}]`) {
		t.Error("the interface name is not part of the selection")
	}
}

// ips and mac on a network no plugin of which declares the capability go,
// as Multus passes them, both as runtimeConfig (for whichever plugin
// declares it) and as MAC= and IP= in CNI_ARGS; strictCapabilities refuses
// them instead. Other capabilities have no CNI_ARGS form.
func TestPlanCapabilitiesViaCNIArgs(t *testing.T) {
	cases := []struct {
		name, networks string
		strict         bool
		wantArgs       string // the attachment's CNI_ARGS, "K=V;K=V"
		err            string
	}{
		{"the issue's NAD", `[{"name":"static","ips":["10.1.1.21/24"],"mac":"02:00:00:00:00:21","default-route":["10.1.1.254"]}]`,
			false, "MAC=02:00:00:00:00:21;IP=10.1.1.21/24", ""},
		{"two addresses, comma-separated", `[{"name":"static","ips":["10.1.1.21/24","fd00::21/64"]}]`, false, "IP=10.1.1.21/24,fd00::21/64", ""},
		{"mac declared by tuning, ips not", `[{"name":"tuned","ips":["10.1.1.21/24"],"mac":"02:00:00:00:00:21"}]`, false, "IP=10.1.1.21/24", ""},
		{"both declared", `[{"name":"caps","ips":["10.1.1.21/24"],"mac":"02:00:00:00:00:21"}]`, false, "", ""},
		{"nothing requested", `[{"name":"static"}]`, false, "", ""},
		{"strict", `[{"name":"static","mac":"02:00:00:00:00:21"}]`, true, "", `"mac" requested but no plugin`},
		{"strict, declared", `[{"name":"caps","mac":"02:00:00:00:00:21"}]`, true, "", ""},
		{"bandwidth has no CNI_ARGS form", `[{"name":"static","bandwidth":{"ingressRate":1}}]`, false, "", `"bandwidth" capability`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			specs, err := plan(cfg(func(cf *config.Config) { cf.StrictCapabilities = c.strict }), "default",
				map[string]string{selection.NetworksAnnotation: c.networks})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error = %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := specs[1]
			var got []string
			for _, p := range s.CNIArgs() {
				got = append(got, p[0]+"="+p[1])
			}
			if strings.Join(got, ";") != c.wantArgs {
				t.Errorf("CNI_ARGS = %q, want %q", strings.Join(got, ";"), c.wantArgs)
			}
			var e selection.Element
			must(t, json.Unmarshal([]byte(strings.Trim(c.networks, "[]")), &e))
			if len(e.IPs) > 0 && !reflect.DeepEqual(s.CapabilityArgs["ips"], e.IPs) || e.MAC != "" && s.CapabilityArgs["mac"] != e.MAC {
				t.Errorf("runtimeConfig = %v, want the request too", s.CapabilityArgs)
			}
		})
	}
}

// The default-network annotation: a name without a namespace is looked up
// in multusNamespace as Multus does, then in the pod's namespace; the JSON
// form is accepted; namespace isolation skips forbidden namespaces; a
// running pod stays on the one it is on.
func TestPlanDefaultNetwork(t *testing.T) {
	isolated := func(c *config.Config) { c.NamespaceIsolation = true }
	cases := []struct {
		name, annotation, current string
		mod                       func(*config.Config)
		want                      string
	}{
		{"multusNamespace first", "alt", "", nil, "kube-system/alt"},
		{"then the pod's namespace", "own", "", nil, "team/own"},
		{"json form", `[{"name":"alt"}]`, "", nil, "kube-system/alt"},
		{"json form with namespace", `[{"name":"alt","namespace":"team"}]`, "", nil, "team/alt"},
		{"explicit namespace", "team/alt", "", nil, "team/alt"},
		{"another multusNamespace", "alt", "", func(c *config.Config) { c.MultusNamespace = "team" }, "team/alt"},
		{"a running pod stays where it is", "alt", "team/alt", nil, "team/alt"},
		{"a running pod moved by an edit", "alt", "team/own", nil, "kube-system/alt"},
		{"isolation skips multusNamespace", "alt", "", isolated, "team/alt"},
		{"isolation with multusNamespace global", "alt", "", func(c *config.Config) {
			c.NamespaceIsolation, c.GlobalNamespaces = true, []string{"kube-system"}
		}, "kube-system/alt"},
		{"no annotation", "", "", nil, "kube-system/cluster"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := Primary(Input{Pod: Pod{Namespace: "team", Annotations: map[string]string{selection.DefaultNetworkAnnotation: c.annotation}},
				Config: cfg(c.mod), IfName: "eth0", CurrentPrimary: c.current, Lookup: lookup})
			if err != nil {
				t.Fatal(err)
			}
			if s.Network != c.want || !s.Primary || s.IfName != "eth0" {
				t.Errorf("primary = %s@%s, want %s@eth0", s.Network, s.IfName, c.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
