package store

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/rewire-cni/rewire/pkg/attachment"
)

// benchRecord is a completed record of a pod with a primary and three
// secondaries, each with a delegate config and result of realistic size.
func benchRecord(id string) *Sandbox {
	sb := &Sandbox{ContainerID: id, NetNS: "/var/run/netns/cni-0f4c2a", IfName: "eth0", PodNamespace: "default",
		PodName: "bench", PodUID: "5c1e0a8e-1d4b-4b9e-9a57-3f0c1c8f6a11", CNIVersion: "1.1.0", Complete: true,
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "bench"}}}
	for i := range 4 {
		conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net%d","plugins":[{"type":"macvlan","master":"eth0","mode":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"172.20.%d.0/24"}]]}}]}`, i, i)
		res := fmt.Sprintf(`{"cniVersion":"1.1.0","interfaces":[{"name":"net%d","mac":"5e:8f:1a:22:33:%02x","sandbox":"/var/run/netns/cni-0f4c2a"}],"ips":[{"interface":0,"address":"172.20.%d.7/24","gateway":"172.20.%d.1"}],"dns":{}}`, i, i, i, i)
		sb.Attachments = append(sb.Attachments, Attachment{
			Spec:  attachment.Spec{Network: fmt.Sprintf("default/net%d", i), IfName: fmt.Sprintf("net%d", i), Config: json.RawMessage(conf), Primary: i == 0},
			State: Added, Result: json.RawMessage(res)})
	}
	return sb
}

// BenchmarkCommit is one durable record write (as an ADD's first record)
// and one removal (a DEL's, journaled, not synced), one at a time.
func BenchmarkCommit(b *testing.B) {
	for _, tc := range []struct {
		name string
		open func(string, bool) (*Store, error)
	}{{"journal", New}, {"fsync-file-and-dir", Open}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := tc.open(b.TempDir(), false)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; b.Loop(); i++ {
				id := fmt.Sprintf("c%d", i)
				if err := s.Commit(benchRecord(id)); err != nil {
					b.Fatal(err)
				}
				if err := s.Delete(id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
