package harness

import (
	"fmt"
	"net"
	"runtime"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// Client is a network namespace linked to the host by a veth pair: "<name>"
// on the host, "<name>c" in the client.
type Client struct {
	NS   ns.NetNS
	host string
}

// NewClient makes a client outside the node's pod networks that reaches the
// pod subnet through the host, as a pod on another node does: its own /24
// (subnet is the prefix, "10.251.3"), a default route via the host.
func NewClient(name, subnet string) (*Client, error) {
	return newClient(name, subnet+".2/24", subnet+".1", func(host netlink.Link) error {
		return upWithAddr(host.Attrs().Name, subnet+".1/24")
	})
}

// NewBridgeClient makes a client attached to a host bridge with address
// cidr, as a pod on that bridge on the same node is: it reaches the bridge's
// other members directly over L2.
func NewBridgeClient(name, bridge, cidr string) (*Client, error) {
	return newClient(name, cidr, "", func(host netlink.Link) error {
		br, err := netlinksafe.LinkByName(bridge)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(host, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(host)
	})
}

// NewMacvlanClient makes a client on a macvlan (bridge mode) of master with
// address cidr, as a neighbour on a secondary network's L2 segment is: it
// reaches the pod's macvlan interfaces on that master directly.
func NewMacvlanClient(name, master, cidr string) (*Client, error) {
	n, err := testutils.NewNS()
	if err != nil {
		return nil, err
	}
	c := &Client{NS: n, host: name}
	err = hostDo(func() error {
		m, err := netlinksafe.LinkByName(master)
		if err != nil {
			return err
		}
		mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: m.Attrs().Index, Namespace: netlink.NsFd(int(n.Fd()))},
			Mode: netlink.MACVLAN_MODE_BRIDGE}
		if err := netlink.LinkAdd(mv); err != nil {
			return fmt.Errorf("client macvlan: %w", err)
		}
		return nil
	})
	if err == nil {
		err = n.Do(func(ns.NetNS) error {
			lo, _ := netlinksafe.LinkByName("lo")
			_ = netlink.LinkSetUp(lo)
			return upWithAddr(name, cidr)
		})
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func newClient(name, cidr, gw string, hostSide func(netlink.Link) error) (*Client, error) {
	n, err := testutils.NewNS()
	if err != nil {
		return nil, err
	}
	c := &Client{NS: n, host: name}
	err = hostDo(func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "c"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("client veth: %w", err)
		}
		host, err := netlinksafe.LinkByName(name)
		if err != nil {
			return err
		}
		if err := hostSide(host); err != nil {
			return err
		}
		peer, err := netlinksafe.LinkByName(name + "c")
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(peer, int(n.Fd()))
	})
	if err == nil {
		err = n.Do(func(ns.NetNS) error {
			lo, _ := netlinksafe.LinkByName("lo")
			_ = netlink.LinkSetUp(lo)
			if err := upWithAddr(name+"c", cidr); err != nil || gw == "" {
				return err
			}
			l, _ := netlinksafe.LinkByName(name + "c")
			return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)})
		})
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close removes the client's links and netns.
func (c *Client) Close() {
	_ = hostDo(func() error {
		if l, err := netlinksafe.LinkByName(c.host); err == nil {
			_ = netlink.LinkDel(l)
		}
		return nil
	})
	_ = c.NS.Close()
	_ = testutils.UnmountNS(c.NS)
}

func hostDo(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return f()
}

func upWithAddr(link, cidr string) error {
	l, err := netlinksafe.LinkByName(link)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: adding %s: %w", link, cidr, err)
	}
	return netlink.LinkSetUp(l)
}
