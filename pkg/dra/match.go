package dra

import (
	"fmt"
	"sort"
)

// Lookup returns the ResourceSlice entry of an allocated device.
type Lookup func(driver, pool, device string) (SliceDevice, bool)

// Resolve finds the CNI devices of the claims reserved for a pod: claims in
// name order, the results of each in allocation order (the order Multus
// reads them in, but for the claims: it takes them in the order of the
// pod's resourceClaims, which a pod's metadata does not tell). A device
// without both attributes is not a CNI device and is skipped, as Multus
// does (a pod may hold a GPU claim too); a device no slice has is reported
// Unresolved.
func Resolve(claims []*Claim, lookup Lookup) PodDevices {
	sorted := append([]*Claim(nil), claims...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var out PodDevices
	for _, c := range sorted {
		if c.Status.Allocation == nil {
			continue
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			d, ok := lookup(r.Driver, r.Pool, r.Device)
			if !ok {
				out.Unresolved = append(out.Unresolved, fmt.Sprintf("%s (claim %s)", r.Key(), c.Ref()))
				continue
			}
			name, id := d.attr(ResourceNameAttribute), d.attr(DeviceIDAttribute)
			if name == "" || id == "" {
				continue
			}
			out.Devices = append(out.Devices, Device{Claim: c.Ref(), Key: r.Key(), ResourceName: name, DeviceID: id})
		}
	}
	return out
}

// findDevice returns the device of the given name in the slices of one
// driver and pool, from the newest generation of the pool that has it (a
// driver republishing its pool leaves the old slices for a moment).
func findDevice(slices []*Slice, device string) (SliceDevice, bool) {
	var found SliceDevice
	gen, ok := int64(0), false
	for _, s := range slices {
		if ok && s.Spec.Pool.Generation <= gen {
			continue
		}
		for _, d := range s.Spec.Devices {
			if d.Name == device {
				found, gen, ok = d, s.Spec.Pool.Generation, true
				break
			}
		}
	}
	return found, ok
}
