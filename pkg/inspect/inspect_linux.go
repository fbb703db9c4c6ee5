//go:build linux

package inspect

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/rewire-cni/rewire/pkg/store"
)

// Pod reports the newest complete sandbox of the pod with the given UID.
func Pod(st *store.Store, uid string) (*Report, error) {
	ids, err := st.IDs()
	if err != nil {
		return nil, err
	}
	var sb *store.Sandbox
	for _, id := range ids {
		if s, err := st.Get(id); err == nil && s != nil && s.PodUID == uid && s.Complete {
			sb = s
		}
	}
	if sb == nil {
		return nil, fmt.Errorf("no sandbox of pod %s is recorded on this node", uid)
	}
	r := &Report{ContainerID: sb.ContainerID, NetNS: sb.NetNS, Switching: sb.Switch != nil}
	for _, a := range sb.Attachments {
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		_ = json.Unmarshal(a.Result, &res)
		ra := Attachment{Network: a.Network, Interface: a.Link(), Primary: a.Primary, State: string(a.State)}
		if a.IfName != a.Link() {
			ra.IfName = a.IfName
		}
		for _, ip := range res.IPs {
			ra.IPs = append(ra.IPs, ip.Address)
		}
		r.Attachments = append(r.Attachments, ra)
	}
	if r.Links, err = links(sb.NetNS); err != nil {
		r.LinksError = err.Error()
	}
	return r, nil
}

func links(netns string) ([]Link, error) {
	var out []Link
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		ls, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, l := range ls {
			if l.Attrs().Name == "lo" {
				continue
			}
			link := Link{Name: l.Attrs().Name, MAC: l.Attrs().HardwareAddr.String()}
			addrs, _ := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
			for _, a := range addrs {
				if !a.IP.IsLinkLocalUnicast() {
					link.Addrs = append(link.Addrs, a.IPNet.String())
				}
			}
			out = append(out, link)
		}
		return nil
	})
	return out, err
}
