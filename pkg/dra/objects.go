package dra

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Claim is the part of a ResourceClaim read here.
type Claim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            ClaimStatus `json:"status"`
}

// ClaimStatus is the part of a claim's status read here.
type ClaimStatus struct {
	Allocation  *Allocation    `json:"allocation,omitempty"`
	ReservedFor []Consumer     `json:"reservedFor,omitempty"`
	Devices     []DeviceStatus `json:"devices,omitempty"`
}

// Allocation is status.allocation.
type Allocation struct {
	Devices      AllocatedDevices `json:"devices"`
	NodeSelector *NodeSelector    `json:"nodeSelector,omitempty"`
}

// AllocatedDevices is status.allocation.devices.
type AllocatedDevices struct {
	Results []Result `json:"results,omitempty"`
}

// Result is one allocated device.
type Result struct {
	Request string  `json:"request"`
	Driver  string  `json:"driver"`
	Pool    string  `json:"pool"`
	Device  string  `json:"device"`
	ShareID *string `json:"shareID,omitempty"`
}

// Key is the device's key in status.devices.
func (r Result) Key() DeviceKey {
	k := DeviceKey{Driver: r.Driver, Pool: r.Pool, Device: r.Device}
	if r.ShareID != nil {
		k.ShareID = *r.ShareID
	}
	return k
}

// NodeSelector is the core/v1 NodeSelector of an allocation.
type NodeSelector struct {
	Terms []NodeSelectorTerm `json:"nodeSelectorTerms"`
}

// NodeSelectorTerm is one term of a NodeSelector.
type NodeSelectorTerm struct {
	MatchExpressions []Requirement `json:"matchExpressions,omitempty"`
	MatchFields      []Requirement `json:"matchFields,omitempty"`
}

// Requirement is a NodeSelectorRequirement.
type Requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Consumer is an entry of status.reservedFor.
type Consumer struct {
	APIGroup string `json:"apiGroup,omitempty"`
	Resource string `json:"resource"`
	Name     string `json:"name"`
	UID      string `json:"uid"`
}

// DeviceStatus is an entry of status.devices (its networkData only).
type DeviceStatus struct {
	Driver      string       `json:"driver"`
	Pool        string       `json:"pool"`
	Device      string       `json:"device"`
	ShareID     *string      `json:"shareID,omitempty"`
	NetworkData *NetworkData `json:"networkData,omitempty"`
}

// Key is the entry's key.
func (d DeviceStatus) Key() DeviceKey {
	return Result{Driver: d.Driver, Pool: d.Pool, Device: d.Device, ShareID: d.ShareID}.Key()
}

// NetworkData is an entry's networkData (resource.k8s.io/v1
// NetworkDeviceData).
type NetworkData struct {
	InterfaceName   string   `json:"interfaceName,omitempty"`
	IPs             []string `json:"ips,omitempty"`
	HardwareAddress string   `json:"hardwareAddress,omitempty"`
}

// Equal reports whether both hold the same values.
func (n *NetworkData) Equal(o *NetworkData) bool {
	if n == nil || o == nil {
		return n == o
	}
	if n.InterfaceName != o.InterfaceName || n.HardwareAddress != o.HardwareAddress || len(n.IPs) != len(o.IPs) {
		return false
	}
	for i := range n.IPs {
		if n.IPs[i] != o.IPs[i] {
			return false
		}
	}
	return true
}

// Ref names the claim.
func (c *Claim) Ref() ClaimRef { return ClaimRef{Namespace: c.Namespace, Name: c.Name, UID: c.UID} }

// Node returns the node the claim is allocated to when its allocation
// names exactly one node (metadata.name In [node], as the scheduler
// writes it for node-local devices), else "".
func (c *Claim) Node() string {
	a := c.Status.Allocation
	if a == nil || a.NodeSelector == nil || len(a.NodeSelector.Terms) != 1 {
		return ""
	}
	t := a.NodeSelector.Terms[0]
	if len(t.MatchExpressions) != 0 || len(t.MatchFields) != 1 {
		return ""
	}
	f := t.MatchFields[0]
	if f.Key != "metadata.name" || f.Operator != "In" || len(f.Values) != 1 {
		return ""
	}
	return f.Values[0]
}

// podUIDs returns the UIDs of the pods the claim is reserved for.
func (c *Claim) podUIDs() []string {
	var out []string
	for _, r := range c.Status.ReservedFor {
		if r.APIGroup == "" && r.Resource == "pods" {
			out = append(out, r.UID)
		}
	}
	return out
}

// DeepCopyObject implements runtime.Object. The selector terms' own lists
// are shared: cached objects are never changed in place.
func (c *Claim) DeepCopyObject() runtime.Object {
	out := &Claim{TypeMeta: c.TypeMeta, Status: ClaimStatus{ReservedFor: append([]Consumer(nil), c.Status.ReservedFor...)}}
	c.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if a := c.Status.Allocation; a != nil {
		out.Status.Allocation = &Allocation{Devices: AllocatedDevices{Results: append([]Result(nil), a.Devices.Results...)}}
		if a.NodeSelector != nil {
			out.Status.Allocation.NodeSelector = &NodeSelector{Terms: append([]NodeSelectorTerm(nil), a.NodeSelector.Terms...)}
		}
	}
	for _, d := range c.Status.Devices {
		if d.NetworkData != nil {
			nd := *d.NetworkData
			nd.IPs = append([]string(nil), nd.IPs...)
			d.NetworkData = &nd
		}
		out.Status.Devices = append(out.Status.Devices, d)
	}
	return out
}

// Slice is the part of a ResourceSlice read here.
type Slice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              SliceSpec `json:"spec"`
}

// SliceSpec is the part of a slice's spec read here.
type SliceSpec struct {
	Driver  string        `json:"driver"`
	Pool    Pool          `json:"pool"`
	Devices []SliceDevice `json:"devices,omitempty"`
}

// Pool is spec.pool.
type Pool struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
}

// SliceDevice is a device of a slice with the attributes read here.
type SliceDevice struct {
	Name       string               `json:"name"`
	Attributes map[string]Attribute `json:"attributes,omitempty"`
}

// Attribute is a device attribute; only string values are read.
type Attribute struct {
	String *string `json:"string,omitempty"`
}

// attr returns the string value of an attribute, "" when it has none.
func (d SliceDevice) attr(name string) string {
	if a, ok := d.Attributes[name]; ok && a.String != nil {
		return *a.String
	}
	return ""
}

// DeepCopyObject implements runtime.Object.
func (s *Slice) DeepCopyObject() runtime.Object {
	out := &Slice{TypeMeta: s.TypeMeta, Spec: SliceSpec{Driver: s.Spec.Driver, Pool: s.Spec.Pool}}
	s.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	for _, d := range s.Spec.Devices {
		attrs := make(map[string]Attribute, len(d.Attributes))
		for k, v := range d.Attributes {
			attrs[k] = v // the string is never changed in place
		}
		out.Spec.Devices = append(out.Spec.Devices, SliceDevice{Name: d.Name, Attributes: attrs})
	}
	return out
}

// slimMeta keeps what the cache needs of an object's metadata.
func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
}

// claimFrom decodes a claim keeping only what this node needs: a claim
// allocated to another node is kept as its name alone.
func claimFrom(obj interface{}, node string) (*Claim, error) {
	if c, ok := obj.(*Claim); ok {
		return c, nil // already slim
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("ResourceClaim: unexpected object %T", obj)
	}
	c := &Claim{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, c); err != nil {
		return nil, fmt.Errorf("ResourceClaim %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	c.TypeMeta, c.ObjectMeta = metav1.TypeMeta{}, slimMeta(c.ObjectMeta)
	if n := c.Node(); n != "" && n != node {
		c.Status = ClaimStatus{}
	}
	return c, nil
}

// sliceFrom decodes a slice keeping only the CNI attributes of its devices.
func sliceFrom(obj interface{}) (*Slice, error) {
	if s, ok := obj.(*Slice); ok {
		return s, nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("ResourceSlice: unexpected object %T", obj)
	}
	s := &Slice{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, s); err != nil {
		return nil, fmt.Errorf("ResourceSlice %s: %w", u.GetName(), err)
	}
	s.TypeMeta, s.ObjectMeta = metav1.TypeMeta{}, slimMeta(s.ObjectMeta)
	for i, d := range s.Spec.Devices {
		kept := map[string]Attribute{}
		for _, name := range []string{ResourceNameAttribute, DeviceIDAttribute} {
			if a, ok := d.Attributes[name]; ok && a.String != nil {
				kept[name] = a
			}
		}
		s.Spec.Devices[i].Attributes = kept
	}
	return s, nil
}
