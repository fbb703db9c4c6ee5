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

func TestParseDefaultNetwork(t *testing.T) {
	e, err := ParseDefaultNetwork("kube-system/calico", "pod-ns")
	if err != nil || e.Name != "calico" || e.Namespace != "kube-system" {
		t.Errorf("got %+v, %v", e, err)
	}
	if e, err := ParseDefaultNetwork("", "pod-ns"); e != nil || err != nil {
		t.Errorf("empty: got %+v, %v", e, err)
	}
	if _, err := ParseDefaultNetwork("net@eth1", "pod-ns"); err == nil {
		t.Error("an interface name for the default network must be refused")
	}
	if _, err := ParseDefaultNetwork("a,b", "pod-ns"); err == nil {
		t.Error("two default networks must be refused")
	}
}
