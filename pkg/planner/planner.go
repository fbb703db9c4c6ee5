// Package planner turns a pod, its network selections and the daemon
// configuration into the ordered list of attachments the pod must have.
// It does no I/O: networks are looked up through the Lookup it is given.
package planner

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// Network is a resolved network: its CNI config list and device resource.
type Network struct {
	Key          string
	ConfList     *libcni.NetworkConfigList
	ResourceName string
}

// Lookup resolves the NAD namespace/name. It returns an error that says
// why a network is unusable: wrapping ErrNotFound when there is no such
// NAD, anything else for a NAD that cannot be used (bad config).
type Lookup func(namespace, name string) (*Network, error)

// ErrNotFound is wrapped by a Lookup's error for a NAD that does not exist.
var ErrNotFound = errors.New("not found")

// Pod is the part of a pod the planner reads.
type Pod struct {
	Namespace   string
	Name        string
	Annotations map[string]string
}

// Input is everything a plan depends on.
type Input struct {
	Pod    Pod
	Config *config.Config
	// ClusterNetwork is the cluster network's config when clusterNetwork is
	// a file or directory; nil when it names a NAD.
	ClusterNetwork *libcni.NetworkConfigList
	// IfName is the primary interface name the runtime asked for.
	IfName string
	// RuntimeArgs are the runtimeConfig values the runtime passed to Rewire;
	// they go to the primary network only.
	RuntimeArgs map[string]interface{}
	// CurrentPrimary is the network a running pod's primary is on (empty at
	// ADD): a default-network name without a namespace that can mean it
	// keeps meaning it (see Primary).
	CurrentPrimary string
	Lookup         Lookup
}

// Error is a planning failure caused by the pod's or the cluster's
// configuration (not a transient fault): it is reported, never retried.
type Error struct{ Err error }

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(format string, a ...interface{}) error { return &Error{Err: fmt.Errorf(format, a...)} }

// capabilityOf maps selection element keys to CNI capability names.
var capabilityOf = map[string]string{
	"ips":             "ips",
	"mac":             "mac",
	"portMappings":    "portMappings",
	"bandwidth":       "bandwidth",
	"infiniband-guid": "infinibandGUID",
}

// Plan computes the pod's attachments: the primary first, then the default
// networks, then the networks of the annotation in their order.
func Plan(in Input) ([]attachment.Spec, error) {
	primary, err := Primary(in)
	if err != nil {
		return nil, err
	}
	secondaries, err := Secondaries(in, nil)
	if err != nil {
		return nil, err
	}
	return append([]attachment.Spec{primary}, secondaries...), nil
}

// Secondaries plans the default networks and the annotation's networks,
// never the primary. An element without an interface name keeps the name of
// a recorded attachment of the same network (so names stay stable across
// edits of a running pod), or else gets the lowest free netN.
func Secondaries(in Input, recorded []attachment.Spec) ([]attachment.Spec, error) {
	elems, err := selection.ParseNetworks(in.Pod.Annotations[selection.NetworksAnnotation], in.Pod.Namespace)
	if err != nil {
		return nil, &Error{Err: err}
	}
	var specs []attachment.Spec
	if !in.Config.IsSystemNamespace(in.Pod.Namespace) {
		for _, name := range in.Config.DefaultNetworks {
			s, err := planElement(in, selection.Element{Name: name, Namespace: in.Config.MultusNamespace}, false)
			if err != nil {
				return nil, err
			}
			specs = append(specs, s)
		}
	}
	for _, e := range elems {
		s, err := planElement(in, e, true)
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if err := assignIfNames(specs, in.IfName, recorded); err != nil {
		return nil, err
	}
	return specs, checkDefaultRoute(specs)
}

// Primary plans the pod's primary attachment: the default-network
// annotation's network when set (subject to namespace isolation), else the
// cluster network.
func Primary(in Input) (attachment.Spec, error) {
	s := attachment.Spec{IfName: in.IfName, Primary: true, CapabilityArgs: in.RuntimeArgs}
	override, err := selection.ParseDefaultNetwork(in.Pod.Annotations[selection.DefaultNetworkAnnotation])
	if err != nil {
		return s, &Error{Err: err}
	}
	var n *Network
	switch {
	case override != nil:
		if n, err = lookupDefaultNetwork(in, *override); err != nil {
			return s, err
		}
	case in.ClusterNetwork != nil:
		n = &Network{Key: in.ClusterNetwork.Name, ConfList: in.ClusterNetwork}
	default:
		if n, err = in.Lookup(in.Config.MultusNamespace, in.Config.ClusterNetwork); err != nil {
			return s, fmt.Errorf("cluster network: %w", err)
		}
	}
	s.Network, s.Config, s.ResourceName = n.Key, n.ConfList.Bytes, n.ResourceName
	return s, nil
}

// lookupDefaultNetwork resolves the default-network annotation's network.
// A name without a namespace is looked up in MultusNamespace, as Multus
// does, then in the pod's namespace (Rewire's reading before, so that such
// annotations keep working); a namespace that namespace isolation forbids
// the pod is skipped. A running pod whose primary is on one of those
// networks stays on it, so that a NAD of the same name created later in
// MultusNamespace does not move it. A NAD that exists but cannot be used is
// reported, never skipped.
func lookupDefaultNetwork(in Input, e selection.Element) (*Network, error) {
	if e.Namespace != "" {
		return lookupAllowed(in, e)
	}
	var errs []string
	for _, ns := range defaultNetworkNamespaces(in, e.Name) {
		e.Namespace = ns
		n, err := in.Lookup(ns, e.Name)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, &Error{Err: fmt.Errorf("network %s: %w", e.Key(), err)}
		}
		errs = append(errs, err.Error())
	}
	return nil, fail("network %q (no namespace given: looked up in multusNamespace %s, then in the pod's namespace %s): %s",
		e.Name, in.Config.MultusNamespace, in.Pod.Namespace, strings.Join(errs, "; "))
}

// defaultNetworkNamespaces are the namespaces a default-network name without
// a namespace is looked up in, in order.
func defaultNetworkNamespaces(in Input, name string) []string {
	var out []string
	for _, ns := range []string{in.Config.MultusNamespace, in.Pod.Namespace} {
		if !slices.Contains(out, ns) && in.Config.NamespaceAllowed(in.Pod.Namespace, ns) {
			out = append(out, ns)
		}
	}
	if i := slices.Index(out, strings.TrimSuffix(in.CurrentPrimary, "/"+name)); i > 0 {
		current := out[i]
		out = append([]string{current}, slices.Delete(out, i, i+1)...)
	}
	return out
}

// lookupAllowed enforces namespace isolation, then resolves the network.
func lookupAllowed(in Input, e selection.Element) (*Network, error) {
	if !in.Config.NamespaceAllowed(in.Pod.Namespace, e.Namespace) {
		return nil, fail("network %s: namespace isolation: pods in namespace %q may not use networks of namespace %q",
			e.Key(), in.Pod.Namespace, e.Namespace)
	}
	n, err := in.Lookup(e.Namespace, e.Name)
	if err != nil {
		return nil, &Error{Err: fmt.Errorf("network %s: %w", e.Key(), err)}
	}
	return n, nil
}

// planElement builds the attachment of one selection element. Elements from
// the pod annotation are subject to namespace isolation; the daemon's
// defaultNetworks are not.
func planElement(in Input, e selection.Element, fromPod bool) (attachment.Spec, error) {
	var n *Network
	var err error
	if fromPod {
		n, err = lookupAllowed(in, e)
	} else if n, err = in.Lookup(e.Namespace, e.Name); err != nil {
		err = fmt.Errorf("default network %s: %w", e.Key(), err)
	}
	if err != nil {
		return attachment.Spec{}, err
	}
	s := attachment.Spec{
		Network:      n.Key,
		IfName:       e.Interface,
		Config:       n.ConfList.Bytes,
		DefaultRoute: e.DefaultRoute,
		ResourceName: n.ResourceName,
		Selection:    selectionKey(e),
	}
	var viaArgs [][2]string
	if s.CapabilityArgs, viaArgs, err = capabilityArgs(e, nad.Capabilities(n.ConfList), in.Config.StrictCapabilities); err != nil {
		return s, &Error{Err: fmt.Errorf("network %s: %w", e.Key(), err)}
	}
	s.SetCNIArgs(viaArgs)
	for k := range e.CNIArgs {
		if !in.Config.CNIArgAllowed(k) {
			return s, fail("network %s: cni-args key %q is not allowed on this node (cniArgsAllowlist)", e.Key(), k)
		}
	}
	if err := injectArgs(&s, e); err != nil {
		return s, err
	}
	return s, nil
}

// selectionKey is the canonical form of what an element asks for besides
// its interface name: an attachment whose selection changed is re-plugged.
func selectionKey(e selection.Element) string {
	e.Interface = ""
	b, _ := json.Marshal(e)
	return string(b)
}

// assignIfNames keeps explicit names, rejects duplicates (the primary's
// name included), lets unnamed attachments keep a recorded name of their
// network, and gives the others the lowest free netN (N >= 1).
func assignIfNames(specs []attachment.Spec, primary string, recorded []attachment.Spec) error {
	used := map[string]string{primary: "the primary network"}
	for _, r := range recorded {
		if r.Primary {
			used[r.IfName] = "the primary network" // its temporary name after a switch
		}
	}
	for _, s := range specs {
		if s.IfName == "" {
			continue
		}
		if other, dup := used[s.IfName]; dup {
			return fail("interface name %q requested by both %s and %s", s.IfName, other, s.Network)
		}
		used[s.IfName] = s.Network
	}
	for i := range specs {
		for _, r := range recorded {
			if specs[i].IfName == "" && !r.Primary && r.Network == specs[i].Network && used[r.IfName] == "" {
				specs[i].IfName = r.IfName
				used[r.IfName] = r.Network
			}
		}
	}
	n := 1
	for i := range specs {
		if specs[i].IfName != "" {
			continue
		}
		for ; used["net"+strconv.Itoa(n)] != ""; n++ {
		}
		specs[i].IfName = "net" + strconv.Itoa(n)
		used[specs[i].IfName] = specs[i].Network
	}
	return nil
}

// ErrDefaultRouteConflict is returned when two networks claim the default route.
var ErrDefaultRouteConflict = errors.New("default-route requested by more than one network")

func checkDefaultRoute(specs []attachment.Spec) error {
	owner := ""
	for _, s := range specs {
		if len(s.DefaultRoute) == 0 {
			continue
		}
		if owner != "" {
			return &Error{Err: fmt.Errorf("%w: %s and %s", ErrDefaultRouteConflict, owner, s.Network)}
		}
		owner = s.Network
	}
	return nil
}
