// Package inspect reports what a node holds for one pod: the attachments
// recorded in the store and the interfaces really present in the pod's
// network namespace ("rewired inspect", run by "kubectl rewire status" in
// the node's rewired pod to show drift). The report's types build on every
// platform (kubectl-rewire reads them); making a report needs Linux.
package inspect

// Retained is Attachment.State of an old primary a live switch moved away
// from (store.Retained): its reservation is kept, it has no interface.
const Retained = "retained"

// Attachment is one recorded attachment.
type Attachment struct {
	Network   string   `json:"network"`
	Interface string   `json:"interface"` // the name in the pod
	IfName    string   `json:"ifName"`    // the CNI name, when it differs
	Primary   bool     `json:"primary,omitempty"`
	State     string   `json:"state"`
	IPs       []string `json:"ips,omitempty"`
}

// Link is an interface present in the pod's netns.
type Link struct {
	Name  string   `json:"name"`
	MAC   string   `json:"mac,omitempty"`
	Addrs []string `json:"addrs,omitempty"`
}

// Report is the node's view of a pod.
type Report struct {
	ContainerID string       `json:"containerID"`
	NetNS       string       `json:"netns"`
	Switching   bool         `json:"switching,omitempty"`
	Attachments []Attachment `json:"attachments"`
	Links       []Link       `json:"links"`
	LinksError  string       `json:"linksError,omitempty"`
}
