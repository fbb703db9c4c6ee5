package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/dra"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/store"
)

// ClaimDevices resolves the devices of a pod's ResourceClaims (package dra).
type ClaimDevices interface {
	// PodDevices returns the CNI devices of the claims reserved for the pod
	// with the given UID; an error says they cannot be known yet.
	PodDevices(uid ktypes.UID) (dra.PodDevices, error)
	// Served reports whether claims may give devices at all (the DRA API is
	// served, or not known yet not to be).
	Served() bool
}

// NetworkDataSink receives the networkData of the attachments backed by a
// claim's device, per pod (namespace/name).
type NetworkDataSink interface {
	Set(pod string, entries []dra.Entry)
	Forget(pod string)
}

// podDevices returns the pod's devices per resource name: those the
// kubelet's device plugins allocated, then those of its ResourceClaims (the
// order Multus appends them in). The error says what a source could not
// tell; it matters only when the devices found are not enough.
func (d *Daemon) podDevices(ctx context.Context, namespace, name string, uid ktypes.UID) (map[string][]string, error) {
	devs := map[string][]string{}
	var errs []string
	switch got, err := d.pluginDevices(ctx, namespace, name); {
	case err != nil:
		errs = append(errs, err.Error())
	default:
		devs = got
	}
	if d.Claims != nil {
		pd, err := d.Claims.PodDevices(uid)
		if err != nil {
			errs = append(errs, err.Error())
		}
		if len(pd.Unresolved) > 0 {
			errs = append(errs, "allocated devices not (yet) in this node's ResourceSlices: "+strings.Join(pd.Unresolved, ", "))
		}
		for res, ids := range pd.IDs() {
			devs[res] = append(devs[res], ids...)
		}
	}
	if len(errs) == 0 {
		return devs, nil
	}
	return devs, errors.New(strings.Join(errs, "; "))
}

// pluginDevices asks the kubelet's PodResources API.
func (d *Daemon) pluginDevices(ctx context.Context, namespace, name string) (map[string][]string, error) {
	if d.Devices == nil {
		return nil, errors.New("no PodResources client is configured")
	}
	return d.Devices.Devices(ctx, namespace, name)
}

// deviceError is the error of a device assignment that failed (nil when
// it did not): with what a source could not tell, and "try again later"
// (code 11) while claims may give devices, since the claim informer may
// not have seen an allocation the kubelet already prepared.
func (d *Daemon) deviceError(assignErr, sourceErr error) error {
	if assignErr == nil {
		return nil
	}
	err := assignErr
	if sourceErr != nil {
		err = fmt.Errorf("%w (%v)", assignErr, sourceErr)
	}
	if d.Claims == nil || !d.Claims.Served() {
		return err
	}
	return types.NewError(types.ErrTryAgainLater, "try again later: "+err.Error()+" (device plugins and ResourceClaims asked)", "")
}

// queueNetworkData queues the networkData of the pod's attachments backed by
// a device of its claims (none: the pod's earlier entries are dropped).
func (d *Daemon) queueNetworkData(ref podRef, specs []attachment.Spec, results []*current.Result) {
	if d.NetworkData == nil || d.Claims == nil || ref.Name == "" {
		return
	}
	var entries []dra.Entry
	if hasDevice(specs) {
		devs, err := d.Claims.PodDevices(ref.UID)
		if err != nil {
			d.Log.Info("networkData not written: claims not known", "pod", ref, "err", err)
			return
		}
		entries = claimEntries(devs, specs, results)
	}
	d.NetworkData.Set(ref.String(), entries)
}

// queueRecordedNetworkData queues the networkData of a sandbox as recorded.
func (d *Daemon) queueRecordedNetworkData(ref podRef, sb *store.Sandbox) {
	if d.NetworkData == nil {
		return
	}
	specs, results, err := storedResults(sb)
	if err != nil {
		d.Log.Error("stored results unreadable", "containerID", sb.ContainerID, "err", err)
		return
	}
	d.queueNetworkData(ref, specs, results)
}

// CatchUpClaims queues the networkData of every completed sandbox whose pod
// (as cached) still runs: entries a restart or an API outage lost are
// written, claims already holding theirs are not.
func (d *Daemon) CatchUpClaims(sandboxes []*store.Sandbox, cached func(namespace, name string) *kube.Pod) {
	for _, sb := range sandboxes {
		if !sb.Complete || sb.PodName == "" || !hasDevice(sb.Specs()) {
			continue
		}
		if pod := cached(sb.PodNamespace, sb.PodName); pod != nil && string(pod.UID) == sb.PodUID {
			d.queueRecordedNetworkData(podRef{Namespace: sb.PodNamespace, Name: sb.PodName, UID: pod.UID}, sb)
		}
	}
}

// forgetNetworkData drops the queued entries of a pod whose sandbox is gone.
func (d *Daemon) forgetNetworkData(ref podRef) {
	if d.NetworkData != nil && ref.Name != "" {
		d.NetworkData.Forget(ref.String())
	}
}

func hasDevice(specs []attachment.Spec) bool {
	for _, s := range specs {
		if s.ResourceName != "" && s.DeviceID != "" {
			return true
		}
	}
	return false
}

// claimEntries pairs each attachment given a claim's device with the
// interface it made.
func claimEntries(devs dra.PodDevices, specs []attachment.Spec, results []*current.Result) []dra.Entry {
	var entries []dra.Entry
	for i, s := range specs {
		if s.ResourceName == "" || s.DeviceID == "" || i >= len(results) {
			continue
		}
		dev, ok := devs.Find(s.ResourceName, s.DeviceID)
		if !ok {
			continue // a device plugin's
		}
		entries = append(entries, dra.Entry{Claim: dev.Claim, Key: dev.Key, Data: dra.NetworkDataOf(s.Link(), s.IfName, results[i])})
	}
	return entries
}
