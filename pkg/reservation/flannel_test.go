package reservation

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// flannelConf is the stock kube-flannel config list with extra keys in its
// flannel plugin.
func flannelConf(extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return `{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel"` + extra + `},
	  {"type":"portmap","capabilities":{"portMappings":true}}]}`
}

// flannelNode writes a subnet file and a scratch file (the delegate config
// flannel's ADD saved for container "c1") and returns the config list that
// points at them.
func flannelNode(t *testing.T) (conf, scratch string) {
	dir := t.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	must(t, os.WriteFile(subnetFile, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644))
	scratch = filepath.Join(dir, "scratch", "c1")
	must(t, os.MkdirAll(filepath.Dir(scratch), 0o700))
	delegate := `{"cniVersion":"0.3.1","name":"cbr0","type":"bridge","isDefaultGateway":true,"mtu":1450,"isGateway":true,"ipMasq":false,
	  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`
	must(t, os.WriteFile(scratch, []byte(delegate), 0o600))
	return flannelConf(`"subnetFile":"` + subnetFile + `","dataDir":"` + filepath.Dir(scratch) + `","delegate":{"isDefaultGateway":true}`), scratch
}

// A switch away from flannel: the record learns the IPAM flannel built, the
// scratch file its DEL replays holds the static IPAM, and the release
// config calls host-local with what flannel gave it.
func TestFlannelRetire(t *testing.T) {
	conf, scratch := flannelNode(t)
	if err := CanHold([]byte(conf)); err != nil {
		t.Fatalf("CanHold: %v", err)
	}
	captured, err := Capture([]byte(conf), "c1")
	must(t, err)
	must(t, HoldScratch(captured, "c1"))
	var held map[string]interface{}
	raw, _ := os.ReadFile(scratch)
	must(t, json.Unmarshal(raw, &held))
	if ipam := held["ipam"].(map[string]interface{}); !reflect.DeepEqual(ipam, map[string]interface{}{"type": StaticType}) || held["type"] != "bridge" {
		t.Fatalf("scratch file after HoldScratch: %s", raw)
	}
	// Again (a crash after the rewrite): the section recorded stays.
	again, err := Capture(captured, "c1")
	must(t, err)
	must(t, HoldScratch(again, "c1"))
	rel, ok, err := ReleaseOnly(again)
	if err != nil || !ok {
		t.Fatalf("ReleaseOnly: ok %v, %v", ok, err)
	}
	p := plugins(t, rel)
	ipam, _ := json.Marshal(p[0]["ipam"])
	want := `{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"}`
	if len(p) != 1 || p[0]["type"] != "host-local" || string(ipam) != want {
		t.Fatalf("release config %s, want host-local with %s", rel, want)
	}
	if Key(again) != Key([]byte(conf)) {
		t.Fatalf("key changed by the capture: %q vs %q", Key(again), Key([]byte(conf)))
	}
}

// A scratch file gone (or never written): the section comes from the
// subnet file, so that the release still finds host-local's store.
func TestFlannelCaptureWithoutScratch(t *testing.T) {
	conf, scratch := flannelNode(t)
	must(t, os.Remove(scratch))
	captured, err := Capture([]byte(conf), "c1")
	must(t, err)
	must(t, HoldScratch(captured, "c1")) // nothing to rewrite
	ipam, _ := json.Marshal(plugins(t, captured)[0]["ipam"])
	if want := `{"ranges":[[{"subnet":"10.244.1.0/24"}]],"type":"host-local"}`; string(ipam) != want {
		t.Fatalf("captured %s, want %s", ipam, want)
	}
	if _, err := Capture([]byte(conf), "../c1"); err == nil {
		t.Fatal("a container ID with a path separator named a scratch file")
	}
}

// Back onto flannel: asked for an address through its delegate's
// args.cni.ips, or configured statically (its own routes kept: flannel adds
// its network's), and its ranges are the subnet file's.
func TestFlannelRequest(t *testing.T) {
	conf, _ := flannelNode(t)
	asked, ok, err := Ask([]byte(conf), []string{"10.244.1.7/24"})
	if err != nil || !ok {
		t.Fatalf("Ask: ok %v, %v", ok, err)
	}
	args, _ := json.Marshal(plugins(t, asked)[0]["delegate"])
	if want := `{"args":{"cni":{"ips":["10.244.1.7/24"]}},"isDefaultGateway":true}`; string(args) != want {
		t.Fatalf("delegate %s, want %s", args, want)
	}
	if _, ok, _ := Ask([]byte(bridgeHL), nil); ok {
		t.Fatal("Ask changed a config without flannel")
	}
	if why := CannotRequest([]byte(conf)); why != "" {
		t.Fatalf("CannotRequest: %s", why)
	}
	nets, known := Ranges([]byte(conf))
	if !known || len(nets) != 1 || nets[0].String() != "10.244.1.0/24" {
		t.Fatalf("ranges %v (known %v), want the subnet file's 10.244.1.0/24", nets, known)
	}
	_, x, _ := net.ParseCIDR("10.244.1.7/24")
	x.IP = net.ParseIP("10.244.1.7")
	static, err := Static([]byte(flannelConf(`"ipam":{"routes":[{"dst":"0.0.0.0/0"}]}`)), &current.Result{
		IPs: []*current.IPConfig{{Address: *x, Gateway: net.ParseIP("10.244.1.1")}}})
	must(t, err)
	ipam, _ := json.Marshal(plugins(t, static)[0]["ipam"])
	if want := `{"addresses":[{"address":"10.244.1.7/24","gateway":"10.244.1.1"}],"routes":[{"dst":"0.0.0.0/0"}],"type":"static"}`; string(ipam) != want {
		t.Fatalf("static IPAM for flannel %s, want %s", ipam, want)
	}
}

func TestKinds(t *testing.T) {
	for _, tc := range []struct {
		conf          string
		hold, request bool
	}{
		{bridgeHL, true, true},
		{flannelConf(""), true, true},
		{`{"name":"x","plugins":[{"type":"macvlan","ipam":{"type":"whereabouts","range":"10.5.0.0/24"}}]}`, true, false},
		{`{"name":"x","plugins":[{"type":"macvlan","ipam":{"type":"dhcp"}}]}`, false, false},
		{`{"name":"x","plugins":[{"type":"cilium-cni"}]}`, false, true},
	} {
		hold, request := CanHold([]byte(tc.conf)) == nil, CannotRequest([]byte(tc.conf)) == ""
		if hold != tc.hold || request != tc.request {
			t.Errorf("%s: hold %v request %v, want %v %v", tc.conf, hold, request, tc.hold, tc.request)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
