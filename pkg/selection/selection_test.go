package selection

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseNetworks(t *testing.T) {
	cases := []struct {
		name, in string
		want     []Element
	}{
		{"empty", "  ", nil},
		{"short name", "macvlan-conf", []Element{{Name: "macvlan-conf", Namespace: "pod-ns"}}},
		{"short ns/name@if", "other/net-a@data0", []Element{{Name: "net-a", Namespace: "other", Interface: "data0"}}},
		{"short list with spaces", "a, b@x ,c/d", []Element{
			{Name: "a", Namespace: "pod-ns"}, {Name: "b", Namespace: "pod-ns", Interface: "x"}, {Name: "d", Namespace: "c"}}},
		{"json all keys", `[{"name":"n","namespace":"o","ips":["10.1.1.5/24","fd00::5"],"mac":"02:00:00:00:00:01",
			"interface":"eth9","cni-args":{"k":"v"},"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
			"bandwidth":{"ingressRate":1000,"ingressBurst":10,"egressRate":2000,"egressBurst":20},"default-route":["10.1.1.1"],
			"infiniband-guid":"c2:11:22:33:44:55:66:77","deviceID":"0000:03:00.1"}]`,
			[]Element{{Name: "n", Namespace: "o", IPs: []string{"10.1.1.5/24", "fd00::5"}, MAC: "02:00:00:00:00:01",
				Interface: "eth9", CNIArgs: map[string]interface{}{"k": "v"},
				PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
				Bandwidth:    &Bandwidth{IngressRate: 1000, IngressBurst: 10, EgressRate: 2000, EgressBurst: 20},
				DefaultRoute: []string{"10.1.1.1"}, InfinibandGUID: "c2:11:22:33:44:55:66:77", DeviceID: "0000:03:00.1"}}},
		{"json claim reference", `[{"name":"n","ipam-claim-reference":"claim-1"}]`,
			[]Element{{Name: "n", Namespace: "pod-ns", IPAMClaimReference: "claim-1"}}},
		{"json unknown keys ignored", `[{"name":"n","future-key":1}]`, []Element{{Name: "n", Namespace: "pod-ns"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseNetworks(c.in, "pod-ns")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParseNetworksErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"malformed json", `[{"name":"a"`, "invalid JSON"},
		{"json object not list", `{"name":"a"}`, "invalid JSON"},
		{"missing name", `[{"namespace":"x"}]`, "name is required"},
		{"empty item", "a,,b", "empty network name"},
		{"two slashes", "a/b/c", "more than one '/'"},
		{"two ats", "a@b@c", "more than one '@'"},
		{"empty interface", "a@", "empty interface"},
		{"empty namespace", "/a", "empty namespace"},
		{"uppercase name", "Net", "name \"Net\""},
		{"bad namespace", `[{"name":"a","namespace":"UP"}]`, "namespace \"UP\""},
		{"ifname slash", `[{"name":"a","interface":"x/y"}]`, "interface \"x/y\""},
		{"ifname too long", "a@abcdefghijklmnop", "too long"},
		{"ifname dot", "a@.", "interface \".\""},
		{"ips and claim", `[{"name":"a","ips":["10.0.0.1"],"ipam-claim-reference":"c"}]`, "mutually exclusive"},
		{"bad ip", `[{"name":"a","ips":["10.0.0.300"]}]`, "ips"},
		{"bad mac", `[{"name":"a","mac":"nope"}]`, "mac"},
		{"bad gateway", `[{"name":"a","default-route":["x"]}]`, "default-route"},
		{"bad port", `[{"name":"a","portMappings":[{"hostPort":1,"containerPort":0}]}]`, "portMappings"},
		{"negative bandwidth", `[{"name":"a","bandwidth":{"ingressRate":-1}}]`, "bandwidth"},
		{"quote in short form", `a"b`, "invalid network reference"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseNetworks(c.in, "pod-ns")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// The default-network annotation: the short form and, as Multus accepts,
// a JSON list of one element; a name without a namespace keeps it empty
// (the planner looks it up in multusNamespace, as Multus does).
func TestParseDefaultNetwork(t *testing.T) {
	cases := []struct {
		name, in string
		want     *Element
		err      string
	}{
		{"empty", " ", nil, ""},
		{"namespace/name", "kube-system/calico", &Element{Name: "calico", Namespace: "kube-system"}, ""},
		{"name only", "calico", &Element{Name: "calico"}, ""},
		{"json name", `[{"name":"calico"}]`, &Element{Name: "calico"}, ""},
		{"json name and namespace", ` [{"name":"calico","namespace":"net"}] `, &Element{Name: "calico", Namespace: "net"}, ""},
		{"json unknown keys ignored", `[{"name":"calico","future-key":1}]`, &Element{Name: "calico"}, ""},
		{"interface", "net@eth1", nil, "interface name cannot be given"},
		{"two networks", "a,b", nil, "more than one network"},
		{"json two elements", `[{"name":"a"},{"name":"b"}]`, nil, "exactly one network selection element, not 2"},
		{"json empty list", `[]`, nil, "exactly one network selection element, not 0"},
		{"json object", `{"name":"a"}`, nil, "invalid JSON"},
		{"json ips", `[{"name":"a","ips":["10.0.0.1/24"],"interface":"x"}]`, nil, "not interface, ips"},
		{"json without name", `[{"namespace":"x"}]`, nil, "name is required"},
		{"bad name", "Calico", nil, `name "Calico"`},
		{"bad namespace", `[{"name":"a","namespace":"UP"}]`, nil, `namespace "UP"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseDefaultNetwork(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.HasPrefix(err.Error(), DefaultNetworkAnnotation) {
					t.Fatalf("error = %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}
