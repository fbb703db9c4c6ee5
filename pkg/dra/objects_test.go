package dra

import (
	"encoding/json"
	"net"
	"reflect"
	"strconv"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A claim as the API server returns it (trimmed to what matters here).
const claimJSON = `{
  "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
  "metadata": {"name": "nic", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
    "labels": {"a": "b"}, "managedFields": [{"manager": "kube-scheduler"}]},
  "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "nic"}}]}},
  "status": {
    "allocation": {
      "devices": {"results": [{"request": "r", "driver": "nic.example.com", "pool": "node-1", "device": "vf0"}]},
      "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["NODE"]}]}]}
    },
    "reservedFor": [{"resource": "pods", "name": "p", "uid": "pod-uid"}, {"apiGroup": "example.com", "resource": "pods", "name": "x", "uid": "other"}],
    "devices": [{"driver": "nic.example.com", "pool": "node-1", "device": "vf0", "conditions": [],
      "networkData": {"interfaceName": "net1", "ips": ["10.0.0.5/24"], "hardwareAddress": "aa:bb:cc:dd:ee:ff"}}]
  }
}`

func unstructuredOf(t *testing.T, js string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(js), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestClaimFrom(t *testing.T) {
	c, err := claimFrom(unstructuredOf(t, claimJSON), "NODE")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "nic" || c.Namespace != "ns" || c.UID != "u1" || c.ResourceVersion != "7" || c.Labels != nil || c.ManagedFields != nil {
		t.Errorf("metadata not slimmed: %+v", c.ObjectMeta)
	}
	if c.Node() != "NODE" {
		t.Errorf("Node() = %q", c.Node())
	}
	if got := c.podUIDs(); !reflect.DeepEqual(got, []string{"pod-uid"}) {
		t.Errorf("podUIDs() = %v (only core pods count)", got)
	}
	want := &NetworkData{InterfaceName: "net1", IPs: []string{"10.0.0.5/24"}, HardwareAddress: "aa:bb:cc:dd:ee:ff"}
	if len(c.Status.Devices) != 1 || !c.Status.Devices[0].NetworkData.Equal(want) {
		t.Errorf("devices = %+v", c.Status.Devices)
	}
	again, err := claimFrom(c, "NODE")
	if err != nil || again != c {
		t.Errorf("an already slim claim is not kept as it is: %v", err)
	}
	cp := c.DeepCopyObject().(*Claim)
	cp.Status.Devices[0].NetworkData.IPs[0] = "changed"
	cp.Status.Allocation.Devices.Results[0].Device = "changed"
	if c.Status.Devices[0].NetworkData.IPs[0] != "10.0.0.5/24" || c.Status.Allocation.Devices.Results[0].Device != "vf0" {
		t.Error("DeepCopyObject shares the status")
	}

	other, err := claimFrom(unstructuredOf(t, claimJSON), "another-node")
	if err != nil {
		t.Fatal(err)
	}
	if other.Name != "nic" || other.Status.Allocation != nil || other.Status.ReservedFor != nil {
		t.Errorf("a claim of another node is kept whole: %+v", other)
	}
	if _, err := claimFrom(42, "NODE"); err == nil {
		t.Error("no error for a foreign object")
	}
}

func TestClaimNode(t *testing.T) {
	term := func(fields ...Requirement) NodeSelectorTerm { return NodeSelectorTerm{MatchFields: fields} }
	name := func(op string, values ...string) Requirement {
		return Requirement{Key: "metadata.name", Operator: op, Values: values}
	}
	tests := []struct {
		name  string
		alloc *Allocation
		want  string
	}{
		{"unallocated", nil, ""},
		{"no node selector (network-attached device)", &Allocation{}, ""},
		{"one node", &Allocation{NodeSelector: &NodeSelector{Terms: []NodeSelectorTerm{term(name("In", "n1"))}}}, "n1"},
		{"two nodes", &Allocation{NodeSelector: &NodeSelector{Terms: []NodeSelectorTerm{term(name("In", "n1", "n2"))}}}, ""},
		{"two terms", &Allocation{NodeSelector: &NodeSelector{Terms: []NodeSelectorTerm{term(name("In", "n1")), term(name("In", "n2"))}}}, ""},
		{"NotIn", &Allocation{NodeSelector: &NodeSelector{Terms: []NodeSelectorTerm{term(name("NotIn", "n1"))}}}, ""},
		{"a label", &Allocation{NodeSelector: &NodeSelector{Terms: []NodeSelectorTerm{{
			MatchExpressions: []Requirement{{Key: "zone", Operator: "In", Values: []string{"a"}}}, MatchFields: []Requirement{name("In", "n1")}}}}}, ""},
	}
	for _, tc := range tests {
		c := &Claim{Status: ClaimStatus{Allocation: tc.alloc}}
		if got := c.Node(); got != tc.want {
			t.Errorf("%s: Node() = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSliceFrom(t *testing.T) {
	s, err := sliceFrom(unstructuredOf(t, `{
	  "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
	  "metadata": {"name": "node-1-nic", "uid": "s1", "annotations": {"a": "b"}},
	  "spec": {"driver": "nic.example.com", "nodeName": "node-1", "pool": {"name": "node-1", "generation": 4, "resourceSliceCount": 1},
	    "devices": [
	      {"name": "vf0", "attributes": {
	        "k8s.cni.cncf.io/resourceName": {"string": "example.com/vf"},
	        "k8s.cni.cncf.io/deviceID": {"string": "0000:05:00.1"},
	        "resource.kubernetes.io/pciBusID": {"string": "0000:05:00.1"},
	        "numa": {"int": 1}}},
	      {"name": "gpu0", "attributes": {"k8s.cni.cncf.io/deviceID": {"int": 3}}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Slice{Spec: SliceSpec{Driver: "nic.example.com", Pool: Pool{Name: "node-1", Generation: 4}, Devices: []SliceDevice{
		cniDevice("vf0", "example.com/vf", "0000:05:00.1"),
		{Name: "gpu0", Attributes: map[string]Attribute{}},
	}}}
	want.ObjectMeta = s.ObjectMeta
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
	if s.Name != "node-1-nic" || s.Annotations != nil {
		t.Errorf("metadata not slimmed: %+v", s.ObjectMeta)
	}
	cp := s.DeepCopyObject().(*Slice)
	delete(cp.Spec.Devices[0].Attributes, DeviceIDAttribute)
	if s.Spec.Devices[0].attr(DeviceIDAttribute) == "" {
		t.Error("DeepCopyObject shares the attributes")
	}
}

func TestServedFrom(t *testing.T) {
	list := func(names ...string) []byte {
		var rs []map[string]interface{}
		for _, n := range names {
			rs = append(rs, map[string]interface{}{"name": n, "namespaced": true, "kind": "K", "verbs": []string{"get"}})
		}
		b, _ := json.Marshal(map[string]interface{}{"kind": "APIResourceList", "groupVersion": "resource.k8s.io/v1", "resources": rs})
		return b
	}
	tests := []struct {
		name    string
		status  int
		body    []byte
		want    bool
		wantErr bool
	}{
		{"served", 200, list("deviceclasses", "resourceclaims", "resourceclaims/status", "resourceclaimtemplates", "resourceslices"), true, false},
		{"no resourceslices", 200, list("resourceclaims", "resourceclaims/status"), false, false},
		{"no claim status", 200, list("resourceclaims", "resourceslices"), false, false},
		{"group version not served", 404, nil, false, false},
		{"server error", 503, nil, false, true},
		{"forbidden", 403, nil, false, true},
		{"garbage", 200, []byte("<html>"), false, true},
	}
	for _, tc := range tests {
		got, err := servedFrom(tc.status, tc.body)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: servedFrom = %v, %v; want %v, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNetworkDataOf(t *testing.T) {
	cidr := func(s string) net.IPNet {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return *n
	}
	idx := func(i int) *int { return &i }
	res := &current.Result{
		Interfaces: []*current.Interface{
			{Name: "net1", Mac: "02:00:00:00:00:01"}, // host side: no sandbox
			{Name: "net1", Mac: "aa:bb:cc:dd:ee:ff", Sandbox: "/var/run/netns/x"},
		},
		IPs: []*current.IPConfig{
			{Address: cidr("192.168.11.200/24"), Interface: idx(1)},
			{Address: cidr("10.9.9.9/8"), Interface: idx(0)},
			{Address: cidr("fd00::5/64"), Interface: idx(1)},
			{Address: cidr("192.168.11.200/24"), Interface: idx(1)}, // twice: once in ips
		},
	}
	tests := []struct {
		name         string
		link, ifName string
		res          *current.Result
		want         NetworkData
	}{
		{"sandbox interface", "net1", "net1", res,
			NetworkData{InterfaceName: "net1", IPs: []string{"192.168.11.200/24", "fd00::5/64"}, HardwareAddress: "aa:bb:cc:dd:ee:ff"}},
		{"renamed link", "eth0", "net1", res,
			NetworkData{InterfaceName: "eth0", IPs: []string{"192.168.11.200/24", "fd00::5/64"}, HardwareAddress: "aa:bb:cc:dd:ee:ff"}},
		{"no interfaces in the result", "net2", "net2", &current.Result{IPs: []*current.IPConfig{{Address: cidr("10.1.1.1/16")}}},
			NetworkData{InterfaceName: "net2", IPs: []string{"10.1.1.1/16"}}},
		{"empty result", "net3", "net3", &current.Result{}, NetworkData{InterfaceName: "net3"}},
	}
	for _, tc := range tests {
		if got := NetworkDataOf(tc.link, tc.ifName, tc.res); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
	many := &current.Result{}
	for i := range 20 {
		many.IPs = append(many.IPs, &current.IPConfig{Address: cidr("10.0.0." + strconv.Itoa(i+1) + "/24")})
	}
	if got := NetworkDataOf("n", "n", many); len(got.IPs) != maxIPs {
		t.Errorf("%d ips, the API takes at most %d", len(got.IPs), maxIPs)
	}
}
