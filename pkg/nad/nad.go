// Package nad holds Rewire's own types for the Network Plumbing WG
// NetworkAttachmentDefinition CRD (k8s.cni.cncf.io/v1) and turns one into a
// CNI configuration list that libcni can execute.
package nad

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group, version and resource of the NetworkAttachmentDefinition CRD.
const (
	Group    = "k8s.cni.cncf.io"
	Version  = "v1"
	Resource = "network-attachment-definitions"
	Kind     = "NetworkAttachmentDefinition"

	// ResourceNameAnnotation on a NAD names the device-plugin resource whose
	// allocated device is handed to the delegate as deviceID.
	ResourceNameAnnotation = "k8s.v1.cni.cncf.io/resourceName"
)

// GVR is the GroupVersionResource of NetworkAttachmentDefinitions.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// NetworkAttachmentDefinition is the CRD object. Only the fields Rewire reads
// are modelled.
type NetworkAttachmentDefinition struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec Spec `json:"spec"`
}

// Spec holds the CNI configuration (a plugin config or a config list) as a
// JSON string. An empty Config means: find the config by network name in the
// configuration directory.
type Spec struct {
	Config string `json:"config,omitempty"`
}

// FromUnstructured converts an object from a dynamic informer.
func FromUnstructured(obj map[string]interface{}) (*NetworkAttachmentDefinition, error) {
	n := &NetworkAttachmentDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, n); err != nil {
		return nil, fmt.Errorf("decoding NetworkAttachmentDefinition: %w", err)
	}
	return n, nil
}

// Key returns "namespace/name".
func (n *NetworkAttachmentDefinition) Key() string {
	return n.Namespace + "/" + n.Name
}

// ResourceName returns the device-plugin resource the NAD asks for, if any.
func (n *NetworkAttachmentDefinition) ResourceName() string {
	return n.Annotations[ResourceNameAnnotation]
}
