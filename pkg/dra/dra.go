// Package dra hands devices allocated through Dynamic Resource Allocation
// (resource.k8s.io/v1) to the networks whose NAD names their resource, as
// Multus does: an allocated device whose ResourceSlice entry carries the
// attribute k8s.cni.cncf.io/resourceName equal to a NAD's
// k8s.v1.cni.cncf.io/resourceName annotation gives that network its
// attribute k8s.cni.cncf.io/deviceID as "deviceID". The pod's claims and
// this node's ResourceSlices come from informer caches (no API read on the
// ADD path), and the interface made from a device is reported back in the
// claim's status.devices[].networkData (KEP-4817).
//
// The daemon keeps its memory small: claims and slices are decoded into the
// few fields read here, not into k8s.io/api's types.
package dra

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// The device attributes a DRA driver publishes for CNI (Multus's names).
const (
	// ResourceNameAttribute must equal the NAD's resourceName annotation.
	ResourceNameAttribute = "k8s.cni.cncf.io/resourceName"
	// DeviceIDAttribute is what the delegate gets as "deviceID" (a PCI
	// address for SR-IOV).
	DeviceIDAttribute = "k8s.cni.cncf.io/deviceID"
)

// Group and version Rewire reads: DRA's GA API.
const (
	Group   = "resource.k8s.io"
	Version = "v1"
)

var (
	// ClaimsGVR are ResourceClaims.
	ClaimsGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "resourceclaims"}
	// SlicesGVR are ResourceSlices.
	SlicesGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "resourceslices"}
)

// ClaimRef names a ResourceClaim.
type ClaimRef struct {
	Namespace, Name string
	UID             types.UID
}

// String is namespace/name.
func (c ClaimRef) String() string { return c.Namespace + "/" + c.Name }

// DeviceKey identifies an allocated device in a claim: the keys of an
// entry of status.devices.
type DeviceKey struct {
	Driver, Pool, Device string
	// ShareID is set for a device allocated with consumable capacity.
	ShareID string
}

// String is driver/pool/device.
func (k DeviceKey) String() string { return k.Driver + "/" + k.Pool + "/" + k.Device }

// Device is an allocated device that carries both CNI attributes.
type Device struct {
	Claim        ClaimRef
	Key          DeviceKey
	ResourceName string
	DeviceID     string
}

// PodDevices are the CNI devices of a pod's claims.
type PodDevices struct {
	// Devices in claim name order, then in the order of the claim's
	// allocation results.
	Devices []Device
	// Unresolved names allocated devices no ResourceSlice in the cache
	// has (yet): "driver/pool/device (claim namespace/name)".
	Unresolved []string
}

// IDs returns the device IDs per resource name, in order.
func (p PodDevices) IDs() map[string][]string {
	out := map[string][]string{}
	for _, d := range p.Devices {
		out[d.ResourceName] = append(out[d.ResourceName], d.DeviceID)
	}
	return out
}

// Find returns the device of the given resource name and device ID.
func (p PodDevices) Find(resourceName, deviceID string) (Device, bool) {
	for _, d := range p.Devices {
		if d.ResourceName == resourceName && d.DeviceID == deviceID {
			return d, true
		}
	}
	return Device{}, false
}
