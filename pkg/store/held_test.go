package store

import (
	"net"
	"testing"

	"github.com/rewire-cni/rewire/pkg/attachment"
)

// The held-address index follows Put, Track and Delete; a Put changing one
// attachment's result leaves the others' entries as they were parsed.
func TestHeldIndexFollowsRecords(t *testing.T) {
	s := openStore(t, t.TempDir())
	holders := func(ip string) int {
		h, err := s.Holders(net.ParseIP(ip), "")
		if err != nil {
			t.Fatal(err)
		}
		return len(h)
	}
	sb := &Sandbox{ContainerID: "c1", PodNamespace: "ns", PodName: "p", Attachments: []Attachment{
		{Spec: attachment.Spec{Network: "a", IfName: "eth0"}, State: Added, Result: []byte(`{"ips":[{"address":"10.0.0.1/24"}]}`)},
		{Spec: attachment.Spec{Network: "b", IfName: "net1"}, State: Adding},
	}}
	if err := s.Put(sb); err != nil {
		t.Fatal(err)
	}
	if holders("10.0.0.1") != 1 || holders("10.0.1.1") != 0 {
		t.Fatal("index does not hold the first result")
	}
	first := s.held.byID["c1"][0]
	sb.Attachments[1].State, sb.Attachments[1].Result = Added, []byte(`{"ips":[{"address":"10.0.1.1/24"}]}`)
	s.Track(sb) // not written: the index knows it all the same
	if holders("10.0.1.1") != 1 || holders("10.0.0.1") != 1 {
		t.Fatal("Track did not update the index")
	}
	if got := s.held.byID["c1"][0]; &got.ip[0] != &first.ip[0] {
		t.Error("the unchanged attachment's result was parsed again")
	}
	sb.Attachments[0].Result = []byte(`{"ips":[{"address":"10.0.0.9/24"}]}`)
	if err := s.Commit(sb); err != nil {
		t.Fatal(err)
	}
	if holders("10.0.0.1") != 0 || holders("10.0.0.9") != 1 {
		t.Error("a changed result is not re-read")
	}
	if err := s.Delete("c1"); err != nil {
		t.Fatal(err)
	}
	if holders("10.0.0.9") != 0 || holders("10.0.1.1") != 0 {
		t.Error("Delete left addresses in the index")
	}
	// Deleting a record that does not exist costs no sync.
	before := s.journal.sync.syncs() + s.dirSync.syncs()
	if err := s.Delete("c2"); err != nil {
		t.Fatal(err)
	}
	if s.journal.sync.syncs()+s.dirSync.syncs() != before {
		t.Error("Delete of a missing record synced")
	}
}
