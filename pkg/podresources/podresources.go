// Package podresources asks the kubelet's PodResources API which devices
// were allocated to a pod, to hand each to the network whose NAD names the
// device's resource (k8s.v1.cni.cncf.io/resourceName).
package podresources

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/rewire-cni/rewire/pkg/attachment"
)

// Client talks to the kubelet PodResources socket.
type Client struct {
	Socket  string
	Timeout time.Duration
}

// Devices returns the device IDs allocated to the pod, per resource name, in
// container order.
func (c *Client) Devices(ctx context.Context, namespace, name string) (map[string][]string, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources %s: %w", c.Socket, err)
	}
	defer conn.Close()
	resp, err := podresourcesv1.NewPodResourcesListerClient(conn).List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources List: %w", err)
	}
	out := map[string][]string{}
	for _, p := range resp.GetPodResources() {
		if p.GetNamespace() != namespace || p.GetName() != name {
			continue
		}
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				out[d.GetResourceName()] = append(out[d.GetResourceName()], d.GetDeviceIds()...)
			}
		}
	}
	return out, nil
}

// NeedsDevices reports whether any spec waits for a device.
func NeedsDevices(specs []attachment.Spec) bool {
	for _, s := range specs {
		if s.ResourceName != "" && s.DeviceID == "" {
			return true
		}
	}
	return false
}

// Assign hands each spec that names a resource the next unused device of
// that resource. It fails when the pod was given fewer devices than networks
// asking for them.
func Assign(specs []attachment.Spec, devices map[string][]string) error {
	used := map[string]int{}
	for i := range specs {
		s := &specs[i]
		if s.ResourceName == "" || s.DeviceID != "" {
			continue
		}
		ids := devices[s.ResourceName]
		n := used[s.ResourceName]
		if n >= len(ids) {
			return fmt.Errorf("network %s: resource %s: the pod has %d device(s) allocated, not enough for its networks (did the pod request the resource?)",
				s.Network, s.ResourceName, len(ids))
		}
		used[s.ResourceName] = n + 1
		if err := s.SetDeviceID(ids[n]); err != nil {
			return err
		}
	}
	return nil
}
