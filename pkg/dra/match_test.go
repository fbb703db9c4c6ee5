package dra

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func str(s string) *string { return &s }

func cniDevice(name, resource, id string) SliceDevice {
	attrs := map[string]Attribute{}
	if resource != "" {
		attrs[ResourceNameAttribute] = Attribute{String: str(resource)}
	}
	if id != "" {
		attrs[DeviceIDAttribute] = Attribute{String: str(id)}
	}
	return SliceDevice{Name: name, Attributes: attrs}
}

func slice(driver, pool string, gen int64, devices ...SliceDevice) *Slice {
	return &Slice{Spec: SliceSpec{Driver: driver, Pool: Pool{Name: pool, Generation: gen}, Devices: devices}}
}

func claim(name string, results ...Result) *Claim {
	return &Claim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Status: ClaimStatus{Allocation: &Allocation{Devices: AllocatedDevices{Results: results}}}}
}

func result(driver, pool, device string) Result {
	return Result{Request: "r", Driver: driver, Pool: pool, Device: device}
}

// lookupIn is Cache.lookup over a fixed list of slices.
func lookupIn(slices ...*Slice) Lookup {
	return func(driver, pool, device string) (SliceDevice, bool) {
		var of []*Slice
		for _, s := range slices {
			if s.Spec.Driver == driver && s.Spec.Pool.Name == pool {
				of = append(of, s)
			}
		}
		return findDevice(of, device)
	}
}

func TestResolve(t *testing.T) {
	const drv = "nic.example.com"
	nodeSlices := []*Slice{
		slice(drv, "node-1", 1,
			cniDevice("vf0", "example.com/vf", "0000:05:00.1"),
			cniDevice("vf1", "example.com/vf", "0000:05:00.2"),
			cniDevice("rdma0", "example.com/rdma", "0000:06:00.1"),
			cniDevice("no-id", "example.com/vf", ""),
			cniDevice("no-name", "", "0000:07:00.1")),
		slice("gpu.example.com", "node-1", 1, cniDevice("gpu0", "", "")),
	}
	devOf := func(c, device, res, id string) Device {
		return Device{Claim: ClaimRef{Namespace: "ns", Name: c, UID: types.UID("uid-" + c)},
			Key: DeviceKey{Driver: drv, Pool: "node-1", Device: device}, ResourceName: res, DeviceID: id}
	}
	tests := []struct {
		name           string
		claims         []*Claim
		slices         []*Slice
		wantDevices    []Device
		wantUnresolved []string
	}{
		{name: "no claims", slices: nodeSlices},
		{
			name:        "one device",
			claims:      []*Claim{claim("a", result(drv, "node-1", "vf0"))},
			slices:      nodeSlices,
			wantDevices: []Device{devOf("a", "vf0", "example.com/vf", "0000:05:00.1")},
		},
		{
			name: "allocation order within a claim, claims by name",
			claims: []*Claim{
				claim("b", result(drv, "node-1", "rdma0")),
				claim("a", result(drv, "node-1", "vf1"), result(drv, "node-1", "vf0")),
			},
			slices: nodeSlices,
			wantDevices: []Device{
				devOf("a", "vf1", "example.com/vf", "0000:05:00.2"),
				devOf("a", "vf0", "example.com/vf", "0000:05:00.1"),
				devOf("b", "rdma0", "example.com/rdma", "0000:06:00.1"),
			},
		},
		{
			name: "devices without both attributes are not CNI devices (a GPU beside a NIC)",
			claims: []*Claim{claim("a", result("gpu.example.com", "node-1", "gpu0"), result(drv, "node-1", "no-id"),
				result(drv, "node-1", "no-name"), result(drv, "node-1", "vf0"))},
			slices:      nodeSlices,
			wantDevices: []Device{devOf("a", "vf0", "example.com/vf", "0000:05:00.1")},
		},
		{
			name:           "a device no slice has is unresolved",
			claims:         []*Claim{claim("a", result(drv, "node-1", "vf9"), result(drv, "other-pool", "vf0"), result(drv, "node-1", "vf0"))},
			slices:         nodeSlices,
			wantDevices:    []Device{devOf("a", "vf0", "example.com/vf", "0000:05:00.1")},
			wantUnresolved: []string{"nic.example.com/node-1/vf9 (claim ns/a)", "nic.example.com/other-pool/vf0 (claim ns/a)"},
		},
		{
			name:   "an unallocated claim gives nothing",
			claims: []*Claim{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}},
			slices: nodeSlices,
		},
		{
			name:   "the newest generation of a pool wins",
			claims: []*Claim{claim("a", result(drv, "node-1", "vf0"))},
			slices: []*Slice{
				slice(drv, "node-1", 1, cniDevice("vf0", "example.com/vf", "old")),
				slice(drv, "node-1", 3, cniDevice("vf0", "example.com/vf", "new")),
				slice(drv, "node-1", 2, cniDevice("vf0", "example.com/vf", "older")),
			},
			wantDevices: []Device{devOf("a", "vf0", "example.com/vf", "new")},
		},
		{
			name:   "a share of a device keeps its share ID",
			claims: []*Claim{claim("a", Result{Driver: drv, Pool: "node-1", Device: "vf0", ShareID: str("s1")})},
			slices: nodeSlices,
			wantDevices: []Device{{Claim: ClaimRef{Namespace: "ns", Name: "a", UID: "uid-a"},
				Key: DeviceKey{Driver: drv, Pool: "node-1", Device: "vf0", ShareID: "s1"}, ResourceName: "example.com/vf", DeviceID: "0000:05:00.1"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Resolve(tc.claims, lookupIn(tc.slices...))
			if !reflect.DeepEqual(got.Devices, tc.wantDevices) {
				t.Errorf("devices:\n got %+v\nwant %+v", got.Devices, tc.wantDevices)
			}
			if !reflect.DeepEqual(got.Unresolved, tc.wantUnresolved) {
				t.Errorf("unresolved: got %q, want %q", got.Unresolved, tc.wantUnresolved)
			}
		})
	}
}

func TestPodDevicesIDsAndFind(t *testing.T) {
	p := PodDevices{Devices: []Device{
		{ResourceName: "a", DeviceID: "1", Key: DeviceKey{Device: "d1"}},
		{ResourceName: "b", DeviceID: "2", Key: DeviceKey{Device: "d2"}},
		{ResourceName: "a", DeviceID: "3", Key: DeviceKey{Device: "d3"}},
	}}
	if got, want := p.IDs(), map[string][]string{"a": {"1", "3"}, "b": {"2"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("IDs() = %v, want %v", got, want)
	}
	tests := []struct {
		res, id, want string
		ok            bool
	}{
		{"a", "3", "d3", true},
		{"b", "2", "d2", true},
		{"b", "3", "", false}, // another resource's ID
		{"c", "1", "", false},
	}
	for _, tc := range tests {
		d, ok := p.Find(tc.res, tc.id)
		if ok != tc.ok || d.Key.Device != tc.want {
			t.Errorf("Find(%q, %q) = %v, %v; want %q, %v", tc.res, tc.id, d.Key.Device, ok, tc.want, tc.ok)
		}
	}
}
