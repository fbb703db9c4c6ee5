package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/dra"
)

type fakePluginDevices struct {
	devs map[string][]string
	err  error
}

func (f fakePluginDevices) Devices(context.Context, string, string) (map[string][]string, error) {
	out := map[string][]string{}
	for k, v := range f.devs {
		out[k] = append([]string(nil), v...)
	}
	return out, f.err
}

type fakeClaimDevices struct {
	devs   dra.PodDevices
	err    error
	absent bool
}

func (f fakeClaimDevices) PodDevices(ktypes.UID) (dra.PodDevices, error) { return f.devs, f.err }
func (f fakeClaimDevices) Served() bool                                  { return !f.absent }

func deviceSpec(network, resource string) attachment.Spec {
	return attachment.Spec{Network: network, IfName: "net1", ResourceName: resource,
		Config: []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"macvlan"}]}`)}
}

func claimDevice(resource, id, device string) dra.Device {
	return dra.Device{Claim: dra.ClaimRef{Namespace: "ns", Name: "c", UID: "cu"},
		Key: dra.DeviceKey{Driver: "nic.example.com", Pool: "node-1", Device: device}, ResourceName: resource, DeviceID: id}
}

// Devices come from the device plugins first, then from the pod's claims;
// a shortage answers "try again later" while claims may give devices.
func TestAssignDevicesFromPluginsAndClaims(t *testing.T) {
	const vf = "example.com/vf"
	plugin := fakePluginDevices{devs: map[string][]string{vf: {"dp-1"}}}
	noKubelet := fakePluginDevices{err: errors.New("kubelet PodResources: no socket")}
	claims := fakeClaimDevices{devs: dra.PodDevices{Devices: []dra.Device{claimDevice(vf, "dra-1", "vf0"), claimDevice(vf, "dra-2", "vf1")}}}
	tests := []struct {
		name     string
		plugin   Devices
		claims   ClaimDevices
		specs    []attachment.Spec
		recorded []attachment.Spec
		want     []string // deviceIDs given
		wantCode uint     // 0: no error
		wantMsg  string
	}{
		{name: "device plugin only", plugin: plugin, specs: []attachment.Spec{deviceSpec("a", vf)}, want: []string{"dp-1"}},
		{name: "device plugin devices first", plugin: plugin, claims: claims,
			specs: []attachment.Spec{deviceSpec("a", vf), deviceSpec("b", vf), deviceSpec("c", vf)}, want: []string{"dp-1", "dra-1", "dra-2"}},
		{name: "claims alone, the kubelet unreachable", plugin: noKubelet, claims: claims,
			specs: []attachment.Spec{deviceSpec("a", vf)}, want: []string{"dra-1"}},
		{name: "no PodResources client, claims give it", claims: claims, specs: []attachment.Spec{deviceSpec("a", vf)}, want: []string{"dra-1"}},
		{name: "a recorded attachment keeps its device", plugin: noKubelet, claims: claims,
			specs: []attachment.Spec{deviceSpec("b", vf)}, recorded: []attachment.Spec{{ResourceName: vf, DeviceID: "dra-1"}}, want: []string{"dra-2"}},
		{name: "claims not known yet, the device plugin's suffice", plugin: plugin, claims: fakeClaimDevices{err: dra.ErrNotReady},
			specs: []attachment.Spec{deviceSpec("a", vf)}, want: []string{"dp-1"}},
		{name: "claims not known yet", plugin: noKubelet, claims: fakeClaimDevices{err: dra.ErrNotReady},
			specs: []attachment.Spec{deviceSpec("a", vf)}, wantCode: types.ErrTryAgainLater, wantMsg: "caches are not ready"},
		{name: "not enough devices with DRA on", plugin: plugin, claims: claims,
			specs:    []attachment.Spec{deviceSpec("a", vf), deviceSpec("b", vf), deviceSpec("c", vf), deviceSpec("d", vf)},
			wantCode: types.ErrTryAgainLater, wantMsg: "try again later: network d: resource example.com/vf: the pod has 3 device(s)"},
		{name: "an allocated device without its slice", plugin: noKubelet,
			claims:   fakeClaimDevices{devs: dra.PodDevices{Unresolved: []string{"nic.example.com/node-1/vf0 (claim ns/c)"}}},
			specs:    []attachment.Spec{deviceSpec("a", vf)},
			wantCode: types.ErrTryAgainLater, wantMsg: "not (yet) in this node's ResourceSlices: nic.example.com/node-1/vf0 (claim ns/c)"},
		{name: "DRA not served: as before", plugin: noKubelet, claims: fakeClaimDevices{absent: true},
			specs: []attachment.Spec{deviceSpec("a", vf)}, wantCode: types.ErrInternal, wantMsg: "no socket"},
		{name: "no DRA: as before", plugin: plugin, specs: []attachment.Spec{deviceSpec("a", "example.com/other")},
			wantCode: types.ErrInternal, wantMsg: "the pod has 0 device(s)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Daemon{Devices: tc.plugin, Claims: tc.claims, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			err := d.assignDevices(context.Background(), "ns", "p", "pod-uid", tc.specs, tc.recorded)
			if tc.wantCode != 0 {
				te := errorCode(err)
				if err == nil || te != tc.wantCode || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("error %v (code %d), want code %d with %q", err, te, tc.wantCode, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range tc.specs {
				got = append(got, s.DeviceID)
				if !strings.Contains(string(s.Config), `"deviceID":"`+s.DeviceID+`"`) {
					t.Errorf("%s: deviceID not injected: %s", s.Network, s.Config)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("devices %v, want %v", got, tc.want)
			}
		})
	}
}

// errorCode is the CNI code a request failing with err answers.
func errorCode(err error) uint {
	if err == nil {
		return 0
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return types.ErrInternal
}

// recordingSink records the networkData queued per pod.
type recordingSink map[string][]dra.Entry

func (r recordingSink) Set(pod string, entries []dra.Entry) { r[pod] = entries }
func (r recordingSink) Forget(pod string)                   { delete(r, pod) }

func TestQueueNetworkData(t *testing.T) {
	mac := "aa:bb:cc:dd:ee:01"
	result := func(ifName, cidr string) *current.Result {
		ip, n, _ := net.ParseCIDR(cidr)
		n.IP = ip
		zero := 0
		return &current.Result{Interfaces: []*current.Interface{{Name: ifName, Mac: mac, Sandbox: "/ns"}},
			IPs: []*current.IPConfig{{Address: *n, Interface: &zero}}}
	}
	primary := attachment.Spec{Network: "cluster", IfName: "eth0", Primary: true}
	fromClaim := attachment.Spec{Network: "ns/vf", IfName: "net1", ResourceName: "example.com/vf", DeviceID: "dra-1"}
	fromPlugin := attachment.Spec{Network: "ns/vf2", IfName: "net2", ResourceName: "example.com/vf", DeviceID: "dp-1"}
	claims := fakeClaimDevices{devs: dra.PodDevices{Devices: []dra.Device{claimDevice("example.com/vf", "dra-1", "vf0")}}}
	sink := recordingSink{}
	d := &Daemon{Claims: claims, NetworkData: sink, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ref := podRef{Namespace: "ns", Name: "p", UID: "pod-uid"}

	d.queueNetworkData(ref, []attachment.Spec{primary, fromClaim, fromPlugin},
		[]*current.Result{result("eth0", "10.1.0.5/24"), result("net1", "192.168.11.200/24"), result("net2", "192.168.12.200/24")})
	want := []dra.Entry{{Claim: dra.ClaimRef{Namespace: "ns", Name: "c", UID: "cu"},
		Key:  dra.DeviceKey{Driver: "nic.example.com", Pool: "node-1", Device: "vf0"},
		Data: dra.NetworkData{InterfaceName: "net1", IPs: []string{"192.168.11.200/24"}, HardwareAddress: mac}}}
	if got := sink["ns/p"]; !reflect.DeepEqual(got, want) {
		t.Errorf("queued %+v\nwant %+v", got, want)
	}

	// The claim's interface unplugged: the pod's entries are replaced by none.
	d.queueNetworkData(ref, []attachment.Spec{primary}, []*current.Result{result("eth0", "10.1.0.5/24")})
	if got, ok := sink["ns/p"]; !ok || len(got) != 0 {
		t.Errorf("after the unplug: %+v, %v; want an empty set", got, ok)
	}
	d.forgetNetworkData(ref)
	if _, ok := sink["ns/p"]; ok {
		t.Error("DEL did not forget the pod")
	}
}
