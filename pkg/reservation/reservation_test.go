package reservation

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

const bridgeHL = `{"cniVersion":"1.0.0","name":"a","plugins":[
 {"type":"bridge","bridge":"cni0","mtu":1450,"ipam":{"type":"host-local","dataDir":"/d","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd01::/64"}]]}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`

func plugins(t *testing.T, conf []byte) []map[string]interface{} {
	t.Helper()
	var top struct {
		Plugins []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(conf, &top); err != nil {
		t.Fatal(err)
	}
	return top.Plugins
}

func TestHold(t *testing.T) {
	out, err := Hold([]byte(bridgeHL))
	if err != nil {
		t.Fatal(err)
	}
	p := plugins(t, out)
	if ipam := p[0]["ipam"].(map[string]interface{}); len(ipam) != 1 || ipam["type"] != StaticType {
		t.Fatalf("held IPAM %v, want only static", ipam)
	}
	if p[0]["bridge"] != "cni0" || p[1]["type"] != "portmap" || p[1]["ipam"] != nil {
		t.Fatalf("Hold changed more than the IPAM: %s", out)
	}
	if !strings.Contains(string(out), `"mtu":1450`) {
		t.Fatalf("numbers not kept exactly: %s", out)
	}
}

func TestReleaseOnly(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		ok         bool
		types      []string
	}{
		{"bridge+portmap", bridgeHL, true, []string{"host-local"}},
		{"no IPAM", `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"macvlan","master":"eth0"}]}`, false, nil},
		{"static only", `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"macvlan","ipam":{"type":"static","addresses":[]}}]}`, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, ok, err := ReleaseOnly([]byte(tc.conf))
			if err != nil || ok != tc.ok {
				t.Fatalf("ok %v err %v, want ok %v", ok, err, tc.ok)
			}
			if !ok {
				return
			}
			p := plugins(t, out)
			if len(p) != len(tc.types) {
				t.Fatalf("plugins %v, want types %v", p, tc.types)
			}
			for i, typ := range tc.types {
				if p[i]["type"] != typ || p[i]["ipam"].(map[string]interface{})["type"] != typ {
					t.Fatalf("plugin %d: %v, want %s called with its IPAM section", i, p[i], typ)
				}
			}
		})
	}
}

func TestStatic(t *testing.T) {
	_, v4, _ := net.ParseCIDR("10.1.0.7/24")
	v4.IP = net.ParseIP("10.1.0.7")
	res := &current.Result{
		IPs:    []*current.IPConfig{{Address: *v4, Gateway: net.ParseIP("10.1.0.1")}},
		Routes: nil,
	}
	_, dflt, _ := net.ParseCIDR("0.0.0.0/0")
	res.Routes = append(res.Routes, &types.Route{Dst: *dflt, GW: net.ParseIP("10.1.0.1")})
	out, err := Static([]byte(bridgeHL), res)
	if err != nil {
		t.Fatal(err)
	}
	ipam := plugins(t, out)[0]["ipam"].(map[string]interface{})
	raw, _ := json.Marshal(ipam)
	want := `{"addresses":[{"address":"10.1.0.7/24","gateway":"10.1.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],"type":"static"}`
	if string(raw) != want {
		t.Fatalf("static IPAM %s, want %s", raw, want)
	}
}

func TestKey(t *testing.T) {
	wa := func(name, rng, netName string) string {
		return `{"cniVersion":"1.0.0","name":"` + name + `","plugins":[{"type":"macvlan","ipam":{"type":"whereabouts","range":"` + rng +
			`","range_start":"` + strings.TrimSuffix(rng, "0/24") + `10","network_name":"` + netName + `"}}]}`
	}
	hl := func(name, dir string) string {
		return `{"cniVersion":"1.0.0","name":"` + name + `","plugins":[{"type":"ptp","ipam":{"type":"host-local","dataDir":"` + dir + `","subnet":"10.1.0.0/24"}}]}`
	}
	for _, tc := range []struct {
		name string
		a, b string
		same bool
	}{
		{"whereabouts: one pool under two names", wa("a", "10.2.0.0/24", ""), wa("b", "10.2.0.0/24", ""), true},
		{"whereabouts: other range", wa("a", "10.2.0.0/24", ""), wa("b", "10.3.0.0/24", ""), false},
		{"whereabouts: other network_name", wa("a", "10.2.0.0/24", "x"), wa("b", "10.2.0.0/24", "y"), false},
		{"host-local: store per network name", hl("a", "/d"), hl("b", "/d"), false},
		{"host-local: same network", hl("a", "/d"), hl("a", "/d"), true},
		{"host-local vs whereabouts", hl("a", "/d"), wa("a", "10.1.0.0/24", ""), false},
		{"host-local: no dataDir is the default one", hl("a", ""), hl("a", "/var/lib/cni/networks/"), true},
		{"flannel's built host-local and a captured section", flannelConf(`"delegate":{"isDefaultGateway":true}`),
			flannelConf(`"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]]}`), true},
		{"flannel's built host-local and a host-local network of its name", flannelConf(""), hl("cbr0", ""), true},
		{"two flannels: one store each", flannelConf(""), strings.Replace(flannelConf(""), "cbr0", "hostgw", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka, kb := Key([]byte(tc.a)), Key([]byte(tc.b))
			if ka == "" || kb == "" || (ka == kb) != tc.same {
				t.Fatalf("keys %q and %q: same %v, want %v", ka, kb, ka == kb, tc.same)
			}
		})
	}
	if k := Key([]byte(`{"name":"x","plugins":[{"type":"macvlan","ipam":{"type":"static"}}]}`)); k != "" {
		t.Fatalf("static IPAM has key %q, want none", k)
	}
}

func TestRanges(t *testing.T) {
	nets, known := Ranges([]byte(bridgeHL))
	if !known || len(nets) != 2 {
		t.Fatalf("ranges %v known %v", nets, known)
	}
	out := Outside(nets, []net.IP{net.ParseIP("10.1.0.9"), net.ParseIP("10.9.0.9"), net.ParseIP("fd01::9")})
	if len(out) != 1 || !out[0].Equal(net.ParseIP("10.9.0.9")) {
		t.Fatalf("outside %v, want [10.9.0.9]", out)
	}
	if _, known := Ranges([]byte(`{"name":"x","plugins":[{"type":"macvlan","ipam":{"type":"dhcp"}}]}`)); known {
		t.Fatal("dhcp ranges known")
	}
	wa, _ := Ranges([]byte(`{"name":"x","plugins":[{"type":"macvlan","ipam":{"type":"whereabouts","range":"10.5.0.10-10.5.0.20/24","ipRanges":[{"range":"fd05::/64"}]}}]}`))
	if len(wa) != 2 || wa[0].String() != "10.5.0.0/24" || wa[1].String() != "fd05::/64" {
		t.Fatalf("whereabouts ranges %v", wa)
	}
}
