package harness

import (
	"fmt"
	"net"
	"runtime"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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
	return NewDualClient(name, subnet, "")
}

// NewDualClient is NewClient with, when subnet6 (a /64 prefix such as
// "fd51:3:") is given, an IPv6 subnet and default route as well.
func NewDualClient(name, subnet, subnet6 string) (*Client, error) {
	cidrs, gws, host := []string{subnet + ".2/24"}, []string{subnet + ".1"}, []string{subnet + ".1/24"}
	if subnet6 != "" {
		cidrs, gws, host = append(cidrs, subnet6+":2/64"), append(gws, subnet6+":1"), append(host, subnet6+":1/64")
	}
	return newClient(name, cidrs, gws, func(l netlink.Link) error {
		for _, cidr := range host {
			if err := upWithAddr(l.Attrs().Name, cidr); err != nil {
				return err
			}
		}
		return nil
	})
}

// NewBridgeClient makes a client attached to a host bridge with addresses
// cidrs, as a pod on that bridge on the same node is: it reaches the
// bridge's other members directly over L2.
func NewBridgeClient(name, bridge string, cidrs ...string) (*Client, error) {
	return newClient(name, cidrs, nil, func(host netlink.Link) error {
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
// addresses cidrs, as a neighbour on a secondary network's L2 segment is: it
// reaches the pod's macvlan interfaces on that master directly.
func NewMacvlanClient(name, master string, cidrs ...string) (*Client, error) {
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
		err = n.Do(func(ns.NetNS) error { return configure(name, cidrs, nil) })
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func newClient(name string, cidrs, gws []string, hostSide func(netlink.Link) error) (*Client, error) {
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
		err = n.Do(func(ns.NetNS) error { return configure(name+"c", cidrs, gws) })
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// configure brings lo and link up with the addresses cidrs and a default
// route via each gateway in gws (in the current namespace).
func configure(link string, cidrs, gws []string) error {
	lo, _ := netlinksafe.LinkByName("lo")
	_ = netlink.LinkSetUp(lo)
	for _, cidr := range cidrs {
		if err := upWithAddr(link, cidr); err != nil {
			return err
		}
	}
	l, err := netlinksafe.LinkByName(link)
	if err != nil {
		return err
	}
	for _, gw := range gws {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", link, gw, err)
		}
	}
	return nil
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
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD // usable at once: the test's own addresses
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("%s: adding %s: %w", link, cidr, err)
	}
	return netlink.LinkSetUp(l)
}
