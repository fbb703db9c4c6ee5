package store

import (
	"bytes"
	"encoding/json"
	"net"
	"sync"
)

// Holder is an attachment that holds an address: the pod's IPAM reserved
// it for that attachment (live, or Retained after a switch).
type Holder struct {
	ContainerID string
	IfName      string
	Pod         string
	Network     string
}

// heldIndex knows the addresses every record's attachments hold. It is
// built on first use from the records on disk and kept current by Put and
// Delete, so that checking an address costs no disk read.
type heldIndex struct {
	mu    sync.Mutex
	built bool
	byID  map[string][]heldAddr
}

type heldAddr struct {
	ip net.IP
	// result is the attachment's result the address was parsed from.
	result []byte
	Holder
}

// Holders returns the attachments of other sandboxes than exceptID that
// hold ip.
func (s *Store) Holders(ip net.IP, exceptID string) ([]Holder, error) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if err := s.buildHeld(); err != nil {
		return nil, err
	}
	var out []Holder
	for id, addrs := range s.held.byID {
		if id == exceptID {
			continue
		}
		for _, a := range addrs {
			if a.ip.Equal(ip) {
				out = append(out, a.Holder)
			}
		}
	}
	return out, nil
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
	s.held.byID = map[string][]heldAddr{}
	for _, id := range ids {
		if sb, err := s.Get(id); err == nil && sb != nil {
			s.held.byID[id] = heldAddrs(sb)
		}
	}
	s.held.built = true
	return nil
}

// noteHeld updates the index after a record was written (sb) or deleted
// (sb nil).
func (s *Store) noteHeld(id string, sb *Sandbox) {
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	if !s.held.built {
		return
	}
	if sb == nil {
		delete(s.held.byID, id)
		return
	}
	s.held.byID[id] = heldAddrsReusing(sb, s.held.byID[id])
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
