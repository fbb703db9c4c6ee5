package store

import (
	"bytes"
	"encoding/json"
	"net"
	"slices"
	"sync"

	"github.com/rewire-cni/rewire/pkg/handover"
)

// Holder is an attachment that holds an address: the pod's IPAM reserved
// it for that attachment (live, or Retained after a switch).
type Holder struct {
	ContainerID string
	IfName      string
	Pod         string
	Network     string
}

// heldIndex knows the addresses every record's attachments hold, and each
// record's Head. It is built on first use from the records on disk and kept
// current by every write and removal, so that checking an address, finding
// a pod's primary network or summing the host changes of all records costs
// no disk read.
type heldIndex struct {
	mu    sync.Mutex
	built bool
	byID  map[string][]heldAddr
	heads map[string]Head
	// claims are addresses claimed by operations in flight, by record ID,
	// until that record is next written, tracked or deleted.
	claims map[string][]heldAddr
}

// Head is what the index keeps of a record besides its addresses.
type Head struct {
	// Complete: the runtime's ADD succeeded.
	Complete bool
	// Primary is the network of the primary attachment ("" without one).
	Primary string
	// Switching: a switch of the primary has not ended (A not retired yet,
	// or a re-addressing switch still draining).
	Switching bool
	// HostChanges are the record's (a copy).
	HostChanges []handover.HostChanges
}

func headOf(sb *Sandbox) Head {
	h := Head{Complete: sb.Complete, Switching: sb.Switch != nil, HostChanges: slices.Clone(sb.HostChanges)}
	if p := sb.Primary(); p != nil {
		h.Primary = p.Network
	}
	return h
}

// Head returns the index's head of id's record, false when there is none.
func (s *Store) Head(id string) (Head, bool, error) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if err := s.buildHeld(); err != nil {
		return Head{}, false, err
	}
	h, ok := s.held.heads[id]
	return h, ok, nil
}

// HostChanges returns the host changes of every record but exceptID's.
func (s *Store) HostChanges(exceptID string) ([]handover.HostChanges, error) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if err := s.buildHeld(); err != nil {
		return nil, err
	}
	var out []handover.HostChanges
	for id, h := range s.held.heads {
		if id != exceptID {
			out = append(out, h.HostChanges...)
		}
	}
	return out, nil
}

// NoteHostChanges makes id's host changes known to HostChanges before its
// record is next written (a caller deciding with HostChanges which bridge
// sysctls stay on holds one lock across the decision and this call).
func (s *Store) NoteHostChanges(id string, changes []handover.HostChanges) error {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if err := s.buildHeld(); err != nil {
		return err
	}
	if h, ok := s.held.heads[id]; ok {
		h.HostChanges = slices.Clone(changes)
		s.held.heads[id] = h
	}
	return nil
}

type heldAddr struct {
	ip net.IP
	// result is the attachment's result the address was parsed from.
	result []byte
	Holder
}

// Holders returns the attachments of other sandboxes than exceptID that
// hold ip (or claimed it).
func (s *Store) Holders(ip net.IP, exceptID string) ([]Holder, error) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if err := s.buildHeld(); err != nil {
		return nil, err
	}
	return s.holders(ip, exceptID), nil
}

// holders is Holders; the caller holds s.held.mu.
func (s *Store) holders(ip net.IP, exceptID string) []Holder {
	var out []Holder
	for _, index := range []map[string][]heldAddr{s.held.byID, s.held.claims} {
		for id, addrs := range index {
			if id == exceptID {
				continue
			}
			for _, a := range addrs {
				if a.ip.Equal(ip) {
					out = append(out, a.Holder)
				}
			}
		}
	}
	return out
}

// HeldIn returns the addresses within nets that sandboxes hold or claimed
// for the holders keep accepts.
func (s *Store) HeldIn(nets []*net.IPNet, keep func(Holder) bool) ([]net.IP, error) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if err := s.buildHeld(); err != nil {
		return nil, err
	}
	var out []net.IP
	for _, index := range []map[string][]heldAddr{s.held.byID, s.held.claims} {
		for _, addrs := range index {
			for _, a := range addrs {
				if keep(a.Holder) && slices.ContainsFunc(nets, func(n *net.IPNet) bool { return n.Contains(a.ip) }) {
					out = append(out, a.ip)
				}
			}
		}
	}
	return out, nil
}

// Conflict is an address Claim found held by another sandbox.
type Conflict struct {
	IP     net.IP
	Holder Holder
}

// Claim registers ips as held by h's sandbox unless another sandbox's
// record holds one of them or another operation claimed it: the check and
// the registration are one step, so two operations on one node cannot both
// take an address. The claim lasts until h's record is next written,
// tracked or deleted, which then holds what it holds.
func (s *Store) Claim(h Holder, ips []net.IP) (*Conflict, error) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if err := s.buildHeld(); err != nil {
		return nil, err
	}
	for _, ip := range ips {
		if other := s.holders(ip, h.ContainerID); len(other) > 0 {
			return &Conflict{IP: ip, Holder: other[0]}, nil
		}
	}
	for _, ip := range ips {
		mine := s.held.claims[h.ContainerID]
		if !slices.ContainsFunc(mine, func(a heldAddr) bool { return a.ip.Equal(ip) }) {
			s.held.claims[h.ContainerID] = append(mine, heldAddr{ip: ip, Holder: h})
		}
	}
	return nil, nil
}

// buildHeld reads every record once; the caller holds s.held.mu.
func (s *Store) buildHeld() error {
	if s.held.built {
		return nil
	}
	ids, err := s.IDs()
	if err != nil {
		return err
	}
	s.held.byID, s.held.heads, s.held.claims = map[string][]heldAddr{}, map[string]Head{}, map[string][]heldAddr{}
	for _, id := range ids {
		if sb, err := s.Get(id); err == nil && sb != nil {
			s.held.byID[id], s.held.heads[id] = heldAddrs(sb), headOf(sb)
		}
	}
	s.held.built = true
	return nil
}

// noteHeld updates the index after a record was written (sb) or deleted
// (sb nil); track: sb was not written, only its addresses are known (Track).
func (s *Store) noteHeld(id string, sb *Sandbox, track bool) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if !s.held.built {
		return
	}
	delete(s.held.claims, id)
	if sb == nil {
		delete(s.held.byID, id)
		delete(s.held.heads, id)
		return
	}
	s.held.byID[id] = heldAddrsReusing(sb, s.held.byID[id])
	if !track {
		s.held.heads[id] = headOf(sb)
	}
}

// heldAddrs lists the addresses in the results of a record's attachments.
func heldAddrs(sb *Sandbox) []heldAddr { return heldAddrsReusing(sb, nil) }

// heldAddrsReusing is heldAddrs taking the entries of an attachment whose
// result has not changed since prev was made from the record (a Put
// changes one attachment at most: the others are not parsed again).
func heldAddrsReusing(sb *Sandbox, prev []heldAddr) []heldAddr {
	var out []heldAddr
	for _, a := range sb.Attachments {
		if len(a.Result) == 0 {
			continue
		}
		if kept, ok := unchanged(prev, a); ok {
			out = append(out, kept...)
			continue
		}
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if json.Unmarshal(a.Result, &res) != nil {
			continue
		}
		result := bytes.Clone(a.Result) // compared with the next Put's
		for _, ip := range res.IPs {
			if addr, _, err := net.ParseCIDR(ip.Address); err == nil {
				out = append(out, heldAddr{ip: addr, result: result, Holder: Holder{
					ContainerID: sb.ContainerID, IfName: a.IfName,
					Pod: sb.PodNamespace + "/" + sb.PodName, Network: a.Network,
				}})
			}
		}
	}
	return out
}

// unchanged returns prev's entries of attachment a when they were made
// from the same result (same interface, network, pod and result bytes).
func unchanged(prev []heldAddr, a Attachment) ([]heldAddr, bool) {
	var out []heldAddr
	for _, h := range prev {
		if h.IfName == a.IfName {
			if h.Network != a.Network || !bytes.Equal(h.result, a.Result) {
				return nil, false
			}
			out = append(out, h)
		}
	}
	return out, len(out) > 0
}
