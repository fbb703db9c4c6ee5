package store

import (
	"net"
	"testing"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/handover"
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

// Heads follow every write and removal, not Track, and are built from the
// records on disk by a store that did not write them (a restarted daemon).
func TestHeadsFollowRecords(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	old := &Sandbox{ContainerID: "c0", Complete: true, HostChanges: []handover.HostChanges{{Bridge: "br0", ProxyARP: true}},
		Attachments: []Attachment{{Spec: attachment.Spec{Network: "cluster", IfName: "eth0", Primary: true}, State: Added}}}
	if err := s.Commit(old); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir) // the index is built from the file
	head := func(id string) (Head, bool) {
		t.Helper()
		h, ok, err := s.Head(id)
		if err != nil {
			t.Fatal(err)
		}
		return h, ok
	}
	changes := func(except string) []handover.HostChanges {
		t.Helper()
		c, err := s.HostChanges(except)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if h, ok := head("c0"); !ok || !h.Complete || h.Primary != "cluster" || len(h.HostChanges) != 1 {
		t.Fatalf("head of a record on disk: %+v %v", h, ok)
	}
	sb := &Sandbox{ContainerID: "c1", Attachments: []Attachment{{Spec: attachment.Spec{Network: "cluster", IfName: "eth0", Primary: true}, State: Adding}}}
	if err := s.Put(sb); err != nil {
		t.Fatal(err)
	}
	sb.Complete = true
	s.Track(sb) // not written: not complete as far as the index knows
	if h, ok := head("c1"); !ok || h.Complete {
		t.Fatalf("head after Track: %+v %v", h, ok)
	}
	sb.Attachments[0].Network = "default/b"
	sb.HostChanges = []handover.HostChanges{{Bridge: "br1", ProxyNDP: true}}
	if err := s.Commit(sb); err != nil {
		t.Fatal(err)
	}
	sb.HostChanges[0].Bridge = "changed after the write"
	if h, _ := head("c1"); !h.Complete || h.Primary != "default/b" || h.HostChanges[0].Bridge != "br1" {
		t.Fatalf("head after Commit: %+v", h)
	}
	if c := changes("c1"); len(c) != 1 || c[0].Bridge != "br0" {
		t.Fatalf("host changes of the others than c1: %+v", c)
	}
	sb.Switch = &Switch{From: "eth0", To: "rwsw0"}
	if err := s.Put(sb); err != nil {
		t.Fatal(err)
	}
	if h, _ := head("c1"); !h.Switching {
		t.Fatalf("head while a switch is recorded: %+v", h)
	}
	sb.Switch = nil
	if err := s.Put(sb); err != nil {
		t.Fatal(err)
	}
	if h, _ := head("c1"); h.Switching {
		t.Fatalf("head after the switch ended: %+v", h)
	}
	if err := s.Delete("c0"); err != nil {
		t.Fatal(err)
	}
	if _, ok := head("c0"); ok || len(changes("c1")) != 0 {
		t.Fatal("a deleted record is still in the index")
	}
}

// Claim checks and registers in one step: of operations racing for one
// address, exactly one gets it, and a claim ends with its record's next
// write.
func TestClaim(t *testing.T) {
	s := openStore(t, t.TempDir())
	ip := []net.IP{net.ParseIP("10.0.0.7")}
	won := make(chan string, 8)
	done := make(chan struct{})
	for i := 0; i < 8; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			id := string(rune('a' + i))
			if c, err := s.Claim(Holder{ContainerID: id}, ip); err == nil && c == nil {
				won <- id
			}
		}()
	}
	for i := 0; i < 8; i++ {
		<-done
	}
	close(won)
	var winners []string
	for id := range won {
		winners = append(winners, id)
	}
	if len(winners) != 1 {
		t.Fatalf("%d operations claimed one address: %v", len(winners), winners)
	}
	if c, _ := s.Claim(Holder{ContainerID: winners[0]}, ip); c != nil {
		t.Fatalf("the claimer's own claim conflicts: %+v", c)
	}
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	if in, _ := s.HeldIn([]*net.IPNet{subnet}, func(h Holder) bool { return h.ContainerID != "z" }); len(in) != 1 || !in[0].Equal(ip[0]) {
		t.Fatalf("HeldIn for another sandbox = %v, want the claimed %v", in, ip)
	}
	if in, _ := s.HeldIn([]*net.IPNet{subnet}, func(h Holder) bool { return h.ContainerID != winners[0] }); len(in) != 0 {
		t.Fatalf("HeldIn for the claimer = %v, want none", in)
	}
	// Its record written without the address (the attempt was undone).
	if err := s.Put(&Sandbox{ContainerID: winners[0]}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Claim(Holder{ContainerID: "z"}, ip); c != nil {
		t.Fatalf("a claim outlived its record's write: %+v", c)
	}
}
