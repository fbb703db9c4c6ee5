// Package config loads the node daemon's configuration file.
package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the daemon configuration (YAML or JSON). Key names follow
// Multus where Multus has the same setting, so a Multus config ports over.
type Config struct {
	// ClusterNetwork is the pod's primary network: the name of a
	// NetworkAttachmentDefinition in MultusNamespace, or the path of a CNI
	// config file or directory (the first config in it, like the kubelet).
	ClusterNetwork string `json:"clusterNetwork"`
	// DefaultNetworks are NAD names (in MultusNamespace) attached to every
	// pod outside SystemNamespaces, after the cluster network.
	DefaultNetworks []string `json:"defaultNetworks,omitempty"`
	// SystemNamespaces get only the cluster network (no DefaultNetworks).
	SystemNamespaces []string `json:"systemNamespaces,omitempty"`
	// MultusNamespace holds the NADs named by ClusterNetwork and DefaultNetworks.
	MultusNamespace string `json:"multusNamespace,omitempty"`
	// NamespaceIsolation lets a pod use only NADs of its own namespace and of
	// GlobalNamespaces, and lets only NADs of MultusNamespace and
	// GlobalNamespaces take their config from ConfDir (ConfDirAllowed).
	NamespaceIsolation bool     `json:"namespaceIsolation,omitempty"`
	GlobalNamespaces   []string `json:"globalNamespaces,omitempty"`
	// CNIArgsAllowlist limits the keys a pod's cni-args may set (empty: any
	// key, as Multus does).
	CNIArgsAllowlist []string `json:"cniArgsAllowlist,omitempty"`
	// ConfDir is searched for a NAD's config when its spec.config is empty.
	ConfDir string `json:"confDir,omitempty"`
	// BinDirs are searched for delegate plugin binaries.
	BinDirs []string `json:"binDirs,omitempty"`
	// PodResourcesSocket is the kubelet PodResources API socket (deviceID).
	PodResourcesSocket string `json:"podResourcesSocket,omitempty"`
	// DeviceInfoDir is the NPWG device-info base directory.
	DeviceInfoDir string `json:"deviceInfoDir,omitempty"`
	// StoreSync fsyncs every store write, also the intermediate ones. Without
	// it (the default) every write is still atomic and survives any daemon
	// crash, and the write that completes an operation (an answered ADD, a
	// DEL, a plug, a switch) is durable before the operation is answered;
	// only the records of operations cut short by a power loss can be lost.
	StoreSync bool `json:"storeSync,omitempty"`
	// AddedInterfaceEvents emits one Event per successful ADD listing the
	// interfaces (failures always get an Event).
	AddedInterfaceEvents *bool `json:"addedInterfaceEvents,omitempty"`
	// PodWait is how long an ADD waits for the pod to reach the informer
	// cache before falling back to one API read.
	PodWait Duration `json:"podWait,omitempty"`
	// SwitchDrainTimeout bounds how long a re-addressing switch keeps the
	// old primary for connections on its address (default 5m).
	SwitchDrainTimeout Duration `json:"switchDrainTimeout,omitempty"`
}

// Duration is a time.Duration written as "2s" in the config file.
type Duration struct{ time.Duration }

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		s = s[1 : len(s)-1]
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %s: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// Load reads and validates a config file, filling in defaults.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(raw)
}

// Parse decodes a YAML or JSON config and fills in defaults.
func Parse(raw []byte) (*Config, error) {
	c := &Config{}
	if err := yaml.UnmarshalStrict(raw, c); err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	c.setDefaults()
	if c.ClusterNetwork == "" {
		return nil, fmt.Errorf("config: clusterNetwork is required")
	}
	return c, nil
}

func (c *Config) setDefaults() {
	t := true
	if c.MultusNamespace == "" {
		c.MultusNamespace = "kube-system"
	}
	if c.SystemNamespaces == nil {
		c.SystemNamespaces = []string{"kube-system"}
	}
	if c.GlobalNamespaces == nil {
		c.GlobalNamespaces = []string{"default"}
	}
	if c.ConfDir == "" {
		c.ConfDir = "/etc/cni/net.d"
	}
	if len(c.BinDirs) == 0 {
		c.BinDirs = []string{"/opt/cni/bin"}
	}
	if c.PodResourcesSocket == "" {
		c.PodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"
	}
	if c.DeviceInfoDir == "" {
		c.DeviceInfoDir = "/var/run/k8s.cni.cncf.io/devinfo"
	}
	if c.AddedInterfaceEvents == nil {
		c.AddedInterfaceEvents = &t
	}
	if c.SwitchDrainTimeout.Duration == 0 {
		c.SwitchDrainTimeout.Duration = 5 * time.Minute
	}
	if c.PodWait.Duration == 0 {
		c.PodWait.Duration = 2 * time.Second
	}
}

// CNIArgAllowed reports whether a pod may set the cni-args key.
func (c *Config) CNIArgAllowed(key string) bool {
	return len(c.CNIArgsAllowlist) == 0 || slices.Contains(c.CNIArgsAllowlist, key)
}

// IsSystemNamespace reports whether ns is one of SystemNamespaces.
func (c *Config) IsSystemNamespace(ns string) bool { return slices.Contains(c.SystemNamespaces, ns) }

// NamespaceAllowed reports whether a pod in podNS may use a NAD in netNS.
func (c *Config) NamespaceAllowed(podNS, netNS string) bool {
	return !c.NamespaceIsolation || podNS == netNS || slices.Contains(c.GlobalNamespaces, netNS)
}

// ConfDirAllowed says whether a NAD in namespace ns may take its CNI config
// from ConfDir (a NAD with an empty spec.config finds the file by its name).
// The files in ConfDir are the node administrator's, like the NADs of
// MultusNamespace: with NamespaceIsolation only NADs in MultusNamespace or a
// GlobalNamespace may stand for one, otherwise a tenant could reach any of
// them by creating a NAD of the same name in its own namespace. Without
// isolation every namespace may use every network, as with Multus.
func (c *Config) ConfDirAllowed(ns string) error {
	if !c.NamespaceIsolation || ns == c.MultusNamespace || slices.Contains(c.GlobalNamespaces, ns) {
		return nil
	}
	allowed := append([]string{c.MultusNamespace}, c.GlobalNamespaces...)
	return fmt.Errorf("with namespaceIsolation, only NADs in namespaces %s may take their config from the node's confDir, not NADs in %q: "+
		"put the CNI config into spec.config, or have an administrator create the NAD in one of those namespaces",
		strings.Join(allowed, ", "), ns)
}
