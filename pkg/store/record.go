package store

import (
	"encoding/json"
	"time"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/handover"
)

// State of one attachment.
type State string

// Attachment states. An attachment is recorded as Adding before its delegate
// ADD runs and as Added after it succeeded; Deleting before its DEL.
// Retiring is recorded before such an attachment's interface is deleted.
// Retained is an old primary a live switch moved away from: its interface
// and host-side pieces are gone, but its IPAM still reserves the pod's
// addresses (status.podIPs can name them) until the pod's DEL releases them.
const (
	Adding   State = "adding"
	Added    State = "added"
	Deleting State = "deleting"
	Retiring State = "retiring"
	Retained State = "retained"
)

// Attachment is a stored attachment: the spec it was added with, its state
// and the delegate's result.
type Attachment struct {
	attachment.Spec
	State  State           `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Sandbox is the record of one pod sandbox (one CNI container ID).
type Sandbox struct {
	ContainerID  string `json:"containerID"`
	NetNS        string `json:"netns"`
	IfName       string `json:"ifName"`
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
	PodUID       string `json:"podUID,omitempty"`
	// Args are the CNI_ARGS the runtime passed (pod identity), replayed on DEL.
	Args [][2]string `json:"args,omitempty"`
	// CNIVersion is the version the runtime asked results in.
	CNIVersion string `json:"cniVersion"`
	// Complete is set once the runtime's ADD succeeded; a record left
	// incomplete by a crash is rolled back at restart.
	Complete bool `json:"complete"`
	// Created is when the runtime's ADD began: a pod's newest sandbox is
	// the one hot-plug and switch act on.
	Created     time.Time    `json:"created,omitzero"`
	Attachments []Attachment `json:"attachments"`
	// Switch is set while the primary network is being switched.
	Switch *Switch `json:"switch,omitempty"`
	// HostChanges are host-side changes made for this pod by a switch
	// (proxy ARP/NDP on a bridge), undone when no record needs them.
	HostChanges []handover.HostChanges `json:"hostChanges,omitempty"`
	// Adopted names the foreign state the record was built from when Rewire
	// took over a sandbox another meta plugin made (Multus: "multus:" and
	// its cniDir); that state is removed once the sandbox is deleted.
	Adopted string `json:"adopted,omitempty"`
	// Seq orders the record's writes: the journal's replay never puts an
	// older state over a newer file.
	Seq uint64 `json:"seq,omitempty"`
}

// Switch records a live primary-network switch in progress: the attachment
// it moves away from and the one it adds (by CNI interface name). Until the
// new attachment is Added the switch is undone after a crash; from then on
// it is finished.
type Switch struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Readdress: the new network has its own addresses and the old
	// attachment stays for connections on its addresses until DrainUntil.
	Readdress  bool      `json:"readdress,omitempty"`
	DrainUntil time.Time `json:"drainUntil,omitzero"`
	// Parked are the new network's host routes to the kept addresses,
	// held back until the cut-over (inbound traffic stays on the old one).
	Parked []handover.HostRoute `json:"parked,omitempty"`
	// DAD are the pod's duplicate address detection sysctls the switch
	// turned off (path: value before), until they are written back.
	DAD map[string]string `json:"dad,omitempty"`
}

// Primary returns the primary attachment (nil when none is recorded).
func (s *Sandbox) Primary() *Attachment {
	for i := range s.Attachments {
		if s.Attachments[i].Primary {
			return &s.Attachments[i]
		}
	}
	return nil
}

// Find returns the attachment with the given interface name.
func (s *Sandbox) Find(ifName string) *Attachment {
	for i := range s.Attachments {
		if s.Attachments[i].IfName == ifName {
			return &s.Attachments[i]
		}
	}
	return nil
}

// Specs returns the specs of the attachments that have an interface (all
// but Retained ones), in record order.
func (s *Sandbox) Specs() []attachment.Spec {
	specs := make([]attachment.Spec, 0, len(s.Attachments))
	for _, a := range s.Attachments {
		if a.State != Retained {
			specs = append(specs, a.Spec)
		}
	}
	return specs
}

// Remove drops the attachment with the given interface name.
func (s *Sandbox) Remove(ifName string) {
	out := s.Attachments[:0]
	for _, a := range s.Attachments {
		if a.IfName != ifName {
			out = append(out, a)
		}
	}
	s.Attachments = out
}
