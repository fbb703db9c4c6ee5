package handover

import (
	"fmt"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TCP states (include/net/tcp_states.h) of a connection still in use: open,
// opening, or closed by the peer but not yet by the application.
var inUse = map[uint8]bool{1: true, 2: true, 3: true, 8: true} // ESTABLISHED, SYN_SENT, SYN_RECV, CLOSE_WAIT

// Connections counts the TCP connections in netns whose local address is one
// of ips (sock_diag), the connections a re-addressing switch waits for.
func Connections(netns string, ips []net.IP) (int, error) {
	n := 0
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			socks, err := netlink.SocketDiagTCP(fam)
			if err != nil {
				return fmt.Errorf("sock_diag: %w", err)
			}
			for _, s := range socks {
				if !inUse[s.State] {
					continue
				}
				for _, ip := range ips {
					if s.ID.Source.Equal(ip) {
						n++
						break
					}
				}
			}
		}
		return nil
	})
	return n, err
}
