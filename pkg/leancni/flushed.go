package leancni

import (
	"context"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// libcni's methods that read or write the cache, with the cache files
// written first (and the names listed again after those that write).

func (c *CNI) CheckNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	c.flush()
	return c.CNI.CheckNetworkList(ctx, list, rt)
}

func (c *CNI) GCNetworkList(ctx context.Context, list *libcni.NetworkConfigList, args *libcni.GCArgs) error {
	c.flush()
	defer c.Forget()
	return c.CNI.GCNetworkList(ctx, list, args)
}

func (c *CNI) GetNetworkListCachedResult(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	c.flush()
	return c.CNI.GetNetworkListCachedResult(list, rt)
}

func (c *CNI) GetNetworkListCachedConfig(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) ([]byte, *libcni.RuntimeConf, error) {
	c.flush()
	return c.CNI.GetNetworkListCachedConfig(list, rt)
}

func (c *CNI) GetCachedAttachments(containerID string) ([]*libcni.NetworkAttachment, error) {
	c.flush()
	return c.CNI.GetCachedAttachments(containerID)
}

func (c *CNI) AddNetwork(ctx context.Context, net *libcni.NetworkConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	c.flush()
	defer c.Forget()
	return c.CNI.AddNetwork(ctx, net, rt)
}

func (c *CNI) CheckNetwork(ctx context.Context, net *libcni.NetworkConfig, rt *libcni.RuntimeConf) error {
	c.flush()
	return c.CNI.CheckNetwork(ctx, net, rt)
}

func (c *CNI) DelNetwork(ctx context.Context, net *libcni.NetworkConfig, rt *libcni.RuntimeConf) error {
	c.flush()
	defer c.Forget()
	return c.CNI.DelNetwork(ctx, net, rt)
}

func (c *CNI) GetNetworkCachedResult(net *libcni.NetworkConfig, rt *libcni.RuntimeConf) (types.Result, error) {
	c.flush()
	return c.CNI.GetNetworkCachedResult(net, rt)
}

func (c *CNI) GetNetworkCachedConfig(net *libcni.NetworkConfig, rt *libcni.RuntimeConf) ([]byte, *libcni.RuntimeConf, error) {
	c.flush()
	return c.CNI.GetNetworkCachedConfig(net, rt)
}

// flush writes the cache files still behind (a file that cannot be
// written is missing for libcni, as when its own write fails).
func (c *CNI) flush() { _ = c.files.Flush() }
