// Package migration executes NetworkMigrations on one node: it moves the
// node's selected pods from one primary network to another by setting their
// default-network annotation, a few at a time, lets the switch reconciler do
// each live switch, watches the outcome, and reports per node in the
// migration's status. There is no central controller: every node's rewired
// works on its own pods.
package migration

import (
	"encoding/json"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GVR is the NetworkMigration resource.
var GVR = schema.GroupVersionResource{Group: "rewire.io", Version: "v1alpha1", Resource: "networkmigrations"}

// Annotation marks a pod moved by a migration (its name), so that a
// rollback moves exactly those back.
const Annotation = "rewire.io/migration"

// Cluster names the cluster network in From and To.
const Cluster = "cluster"

// Migration is a NetworkMigration.
type Migration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              Spec   `json:"spec"`
	Status            Status `json:"status,omitempty"`
}

// Spec is what to move where.
type Spec struct {
	From                 string                `json:"from"`
	To                   string                `json:"to"`
	PodSelector          *metav1.LabelSelector `json:"podSelector,omitempty"`
	Namespaces           []string              `json:"namespaces,omitempty"`
	NamespaceSelector    *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	NodeSelector         *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	MaxConcurrentPerNode int                   `json:"maxConcurrentPerNode,omitempty"`
	AllowReaddress       bool                  `json:"allowReaddress,omitempty"`
	DrainTimeout         string                `json:"drainTimeout,omitempty"`
	Paused               bool                  `json:"paused,omitempty"`
	Rollback             bool                  `json:"rollback,omitempty"`
	NewPods              string                `json:"newPods,omitempty"`
}

// Counts are a migration's progress.
type Counts struct {
	Total     int `json:"total"`
	Switched  int `json:"switched"`
	Failed    int `json:"failed"`
	Skipped   int `json:"skipped"`
	Remaining int `json:"remaining"`
}

// Status sums the nodes' reports.
type Status struct {
	Counts `json:",inline"`
	// Phase: Running, Paused, Complete (every pod switched), or with
	// rollback RollingBack, RolledBack (every pod back); Incomplete when
	// nothing is left to try but failed or skipped pods did not move.
	Phase string                `json:"phase,omitempty"`
	Nodes map[string]NodeStatus `json:"nodes,omitempty"`
}

// NodeStatus is one node's report. In a rollback the counts are of pods
// switched back.
type NodeStatus struct {
	Counts   `json:",inline"`
	Rollback bool `json:"rollback,omitempty"`
	// Paused: the node has seen spec.paused and starts no switch.
	Paused bool `json:"paused,omitempty"`
	// Switching counts the pods whose switch runs now (part of Remaining).
	Switching int `json:"switching,omitempty"`
	// From and To are spec.from and spec.to as the node resolved them (a
	// NAD key, or the key of the node's cluster network): a name without a
	// namespace is a NAD of the node's multusNamespace.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Waiting says why no switch starts on the node (the target network
	// cannot be loaded there, say); its pods stay remaining until it can.
	Waiting     string      `json:"waiting,omitempty"`
	FailedPods  []PodResult `json:"failedPods,omitempty"`
	SkippedPods []PodResult `json:"skippedPods,omitempty"`
	Updated     metav1.Time `json:"updated"`
}

// PodResult names a pod ("namespace/name") and why it failed or was skipped.
type PodResult struct {
	Pod    string `json:"pod"`
	Reason string `json:"reason"`
}

// FromUnstructured decodes a migration.
func FromUnstructured(u *unstructured.Unstructured) (*Migration, error) {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	var m Migration
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("NetworkMigration %s: %w", u.GetName(), err)
	}
	return &m, nil
}

// source and target are the networks of this pass (swapped by rollback).
func (s *Spec) source() string {
	if s.Rollback {
		return s.To
	}
	return s.From
}

func (s *Spec) target() string {
	if s.Rollback {
		return s.From
	}
	return s.To
}

// qualified is a NAD named in From or To with its namespace. A
// NetworkMigration is cluster-scoped and selects pods of many namespaces,
// so a name without a namespace is resolved once for all of them, where
// Multus resolves the networks of its own configuration (clusterNetwork,
// defaultNetworks) and a default-network annotation without namespace: in
// multusNamespace. Never in each pod's own namespace, where a tenant's NAD
// of the same name would decide where the tenant's pods go.
func qualified(network, multusNamespace string) string {
	if network == Cluster || strings.Contains(network, "/") {
		return network
	}
	return multusNamespace + "/" + network
}

// annotationValue is the default-network annotation selecting network
// (nil: remove it, the cluster network). A NAD is always written with its
// namespace, so that the switch reconciler cannot resolve it anywhere else
// (its reading of a bare name falls back to the pod's namespace).
func annotationValue(network, multusNamespace string) interface{} {
	if network == Cluster {
		return nil
	}
	return qualified(network, multusNamespace)
}

// key is the network as recorded for a pod's attachment ("namespace/name",
// or the cluster network's key).
func key(network, multusNamespace, clusterKey string) string {
	if network == Cluster {
		return clusterKey
	}
	return qualified(network, multusNamespace)
}

// sum recomputes the totals and the phase from the nodes' reports.
func (st *Status) sum(spec *Spec) {
	st.Counts = Counts{}
	for _, n := range st.Nodes {
		st.Total += n.Total
		st.Switched += n.Switched
		st.Failed += n.Failed
		st.Skipped += n.Skipped
		st.Remaining += n.Remaining
	}
	switch {
	case spec.Paused:
		st.Phase = "Paused"
	case st.Remaining > 0 && spec.Rollback:
		st.Phase = "RollingBack"
	case st.Remaining > 0:
		st.Phase = "Running"
	case st.Failed+st.Skipped > 0:
		st.Phase = "Incomplete" // nothing left to try, but not every pod moved
	case spec.Rollback:
		st.Phase = "RolledBack"
	default:
		st.Phase = "Complete"
	}
}

// Conflict refuses a new migration's spec beside the existing ones: one
// moving pods off the network another moves them onto (its from is the
// other's to) would take the other's pods, and its rollback. A name without
// namespace matches any namespace's NAD of that name (the caller cannot
// know multusNamespace).
func Conflict(spec Spec, existing []*Migration) error {
	for _, m := range existing {
		if sameNetwork(spec.From, m.Spec.To) {
			return fmt.Errorf("NetworkMigration %s moves pods to %s, this one's from: finish it first (delete it once every pod is on %s), or roll it back and delete it", m.Name, m.Spec.To, m.Spec.To)
		}
	}
	return nil
}

func sameNetwork(a, b string) bool {
	if a == b {
		return true
	}
	if a == Cluster || b == Cluster {
		return false
	}
	if strings.Contains(a, "/") && strings.Contains(b, "/") {
		return false
	}
	return a[strings.Index(a, "/")+1:] == b[strings.Index(b, "/")+1:]
}
