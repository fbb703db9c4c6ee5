// Package config loads the node daemon's configuration file.
package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the daemon configuration (YAML or JSON). Key names follow
// Multus where Multus has the same setting, and a Multus configuration file
// (00-multus.conf or a thick daemon's daemon-config.json) is read as it is
// (multus.go).
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
	// StrictCapabilities refuses an ips or mac request for a network none
	// of whose plugins declares the capability (the CNI spec's reading).
	// Without it (the default, as Multus does) the request also goes to the
	// plugins as IP= and MAC= in CNI_ARGS, which static IPAM, macvlan and
	// tuning honour, and the pod gets an Event saying so.
	StrictCapabilities bool `json:"strictCapabilities,omitempty"`
	// ParallelAttach runs a pod's attachments to different networks at the
	// same time once the cluster network is attached (ADD), and deletes
	// them the same way before it (DEL); the plugins of one network, and
	// the attachments of one network, stay in order. Off by default: the
	// NPWG spec (§7.3) forbids parallel attachment operations for one pod,
	// and some delegates (one IPAM store without locking, plugins that
	// look at each other's interfaces) need the strict order.
	ParallelAttach bool `json:"parallelAttach,omitempty"`
	// MaxConcurrentDelegates caps the delegate plugin executions running
	// at once, node-wide (they run in rewired's cgroup: a burst of ADDs
	// otherwise starts one process per attachment at once); more wait.
	// Unset: derived from the memory limit of rewired's cgroup (package
	// memlimit), no cap when it has none; 0: no cap. A hung plugin holds
	// its slot until the delegate timeout, so leave room for slow ones.
	MaxConcurrentDelegates *int `json:"maxConcurrentDelegates,omitempty"`
	// ReadinessIndicatorFile makes ADD answer "try again later" until this
	// file exists (Multus's readinessindicatorfile: the cluster network's
	// daemon writes it when it is ready).
	ReadinessIndicatorFile string `json:"readinessIndicatorFile,omitempty"`
	// AuxiliaryCNIChainName is Multus's auxiliaryCNIChainName: the plugins
	// of the directory of that name next to the cluster network's config
	// (one plugin config per *.conf file) are appended to the cluster
	// network's chain, after those of its own directory
	// (docs/migrating-from-multus.md). Empty: none.
	AuxiliaryCNIChainName string `json:"auxiliaryCNIChainName,omitempty"`
	// CNIDir is Multus's cniDir: where Multus keeps the delegates it used
	// for each sandbox (and libcni's cache of them). Pods Multus networked
	// before Rewire took the node over are adopted from it and deleted with
	// every attachment released (docs/migrating-from-multus.md). Default
	// /var/lib/cni/multus, Multus's; "none" turns the takeover off.
	CNIDir string `json:"cniDir,omitempty"`
	// LogLevel is the daemon's log level when --log-level is not given:
	// debug, info, warn, error, or Multus's debug, verbose, error, panic.
	LogLevel string `json:"logLevel,omitempty"`
	// CRISocket is the container runtime's CRI endpoint (unix:///PATH or
	// PATH), which self-GC asks for the pod sandboxes that still exist
	// (ListPodSandbox) to release the attachments of those whose CNI DEL
	// never came (containerd never calls CNI GC). Default
	// unix:///run/containerd/containerd.sock, containerd's; "" or "off"
	// turns self-GC off. It must be the runtime the kubelet uses.
	CRISocket *string `json:"criSocket,omitempty"`
	// GCInterval is how often self-GC runs, besides once at start
	// (default 5m).
	GCInterval Duration `json:"gcInterval,omitempty"`
	// GCGrace is the age below which self-GC never releases a record,
	// whatever the runtime says (default 2m).
	GCGrace Duration `json:"gcGrace,omitempty"`
	// GCDryRun makes self-GC only log and count what it would release.
	GCDryRun bool `json:"gcDryRun,omitempty"`

	// ClusterNetworkConfig is the cluster network's CNI config when a Multus
	// config gives it inline (delegates[0]); ClusterNetwork then names it.
	ClusterNetworkConfig json.RawMessage `json:"-"`
	// Ignored lists the keys of a Multus config that mean nothing for
	// Rewire (the daemon logs them once).
	Ignored []string `json:"-"`
}

// defaultBinDir is where CNI plugins are unless binDirs says otherwise.
const defaultBinDir = "/opt/cni/bin"

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

// Parse decodes a YAML or JSON config, Rewire's or Multus's, and fills in
// defaults. Unknown keys are errors in Rewire's config; in Multus's they
// are ignored (as Multus does) and listed in Ignored.
func Parse(raw []byte) (*Config, error) {
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	t, err := fromMultus(js)
	if err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	if t != nil {
		raw = t.json
	}
	c := &Config{}
	if err := yaml.UnmarshalStrict(raw, c); err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	if t != nil {
		c.ClusterNetworkConfig, c.Ignored = t.inline, t.ignored
	}
	c.setDefaults()
	if c.ClusterNetwork == "" {
		return nil, fmt.Errorf("config: clusterNetwork is required (in a Multus config: clusterNetwork, delegates, " +
			"or multusAutoconfigDir with multusConfigFile auto)")
	}
	if err := c.checkAuxiliaryChain(); err != nil {
		return nil, err
	}
	if _, err := c.Level(); err != nil {
		return nil, err
	}
	if c.GCInterval.Duration < 0 || c.GCGrace.Duration < 0 {
		return nil, fmt.Errorf("config: gcInterval %s and gcGrace %s must not be negative", c.GCInterval, c.GCGrace)
	}
	return c, nil
}

// DefaultCRISocket is containerd's CRI endpoint, criSocket's default.
const DefaultCRISocket = "unix:///run/containerd/containerd.sock"

// CRIEndpoint is the CRI endpoint self-GC asks, "" when criSocket turns
// self-GC off.
func (c *Config) CRIEndpoint() string {
	if c.CRISocket == nil {
		return DefaultCRISocket
	}
	if s := strings.TrimSpace(*c.CRISocket); s != "off" {
		return s
	}
	return ""
}

// Level is the log level LogLevel names: slog's debug, info, warn and
// error, or Multus's debug, verbose (info), error and panic (error); empty
// is info.
func (c *Config) Level() (slog.Level, error) {
	switch strings.ToLower(c.LogLevel) {
	case "", "info", "verbose":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "panic":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("config: logLevel %q: want debug, info, warn, error (or Multus's verbose, panic)", c.LogLevel)
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
		c.BinDirs = []string{defaultBinDir}
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
	if c.CNIDir == "" {
		c.CNIDir = "/var/lib/cni/multus"
	}
	if c.PodWait.Duration == 0 {
		c.PodWait.Duration = 2 * time.Second
	}
	if c.GCInterval.Duration == 0 {
		c.GCInterval.Duration = 5 * time.Minute
	}
	if c.GCGrace.Duration == 0 {
		c.GCGrace.Duration = 2 * time.Minute
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
