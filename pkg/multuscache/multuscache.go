// Package multuscache reads what Multus (thin or thick) leaves on a node for
// each pod sandbox it networked, so that Rewire can take such pods over:
// delete them with every attachment released, and adopt them (a record of
// Rewire's own, built from Multus's state) so that hot-plug, unplug and the
// live switch work on them as on pods Rewire created.
//
// Multus keeps two kinds of files under its cniDir (NetConf.CNIDir, default
// /var/lib/cni/multus: defaultCNIDir in pkg/types/conf.go):
//
//   - <cniDir>/<containerID>: the delegates Multus used for the sandbox.
//     saveDelegates (pkg/multus/multus.go) writes json.Marshal of its
//     []*types.DelegateNetConf (pkg/types/types.go) through
//     saveScratchNetConf (directory 0700, file 0600). CmdDel reads it back
//     with consumeScratchNetConf, takes the first delegate as the master
//     plugin (the cluster network, CNI_IFNAME), and removes the file after
//     delPlugins has deleted every delegate, newest first.
//   - <cniDir>/results/<network>-<containerID>-<ifName>: libcni's result
//     cache. Multus runs every delegate through
//     libcni.NewCNIConfigWithCacheDir(binDirs, multusNetconf.CNIDir, exec)
//     (confAdd and conflistAdd in pkg/multus/multus.go), so libcni's
//     cacheAdd (libcni/api.go) writes its cachedInfo there: kind cniCacheV1,
//     containerId, config, ifName, networkName, netns, cniArgs,
//     capabilityArgs and result.
package multuscache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/rewire-cni/rewire/pkg/leancni"
)

// DefaultDir is Multus's default cniDir.
const DefaultDir = "/var/lib/cni/multus"

// CacheKind is the kind of libcni's result cache files (libcni.CNICacheV1).
const CacheKind = "cniCacheV1"

// DelegateNetConf is Multus's types.DelegateNetConf (pkg/types/types.go),
// field for field with the same types and JSON tags, so that json.Marshal
// of a list of them is what saveDelegates writes and decoding reads what it
// wrote. Conf and ConfList are CNI's own types, as in Multus. Multus builds
// from before CNINetworkConfigList existed leave it out; it is not read.
type DelegateNetConf struct {
	Conf                  types.NetConf
	ConfList              types.NetConfList
	CNINetworkConfigList  libcni.NetworkConfigList
	Name                  string
	IfnameRequest         string    `json:"ifnameRequest,omitempty"`
	MacRequest            string    `json:"macRequest,omitempty"`
	InfinibandGUIDRequest string    `json:"infinibandGUIDRequest,omitempty"`
	IPRequest             []string  `json:"ipRequest,omitempty"`
	GatewayRequest        *[]net.IP `json:"default-route,omitempty"`
	IsFilterV4Gateway     bool
	IsFilterV6Gateway     bool
	// MasterPlugin and ConfListPlugin are not written (json:"-" in Multus):
	// CmdDel sets them again after reading the file.
	MasterPlugin   bool   `json:"-"`
	ConfListPlugin bool   `json:"-"`
	DeviceID       string `json:"deviceID,omitempty"`
	ResourceName   string `json:"resourceName,omitempty"`
	// Bytes is the delegate's config as Multus ran it (cni-args and deviceID
	// injected): a config list when ConfListPlugin, else a single config.
	Bytes []byte
}

// Path is the delegates file of a container in dir.
func Path(dir, containerID string) string { return filepath.Join(dir, containerID) }

// validID is what a container ID may look like (libcni's rule, which also
// keeps a file name from being a path).
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// ReadDelegates reads a container's delegates file as Multus's CmdDel does:
// ConfListPlugin is set for a delegate with plugins and the first delegate
// is the master plugin. A missing file is an error wrapping fs.ErrNotExist.
func ReadDelegates(dir, containerID string) ([]*DelegateNetConf, error) {
	if !validID.MatchString(containerID) {
		return nil, fmt.Errorf("multus cache: invalid container ID %q", containerID)
	}
	raw, err := os.ReadFile(Path(dir, containerID))
	if err != nil {
		return nil, fmt.Errorf("multus cache: %w", err)
	}
	var delegates []*DelegateNetConf
	if err := json.Unmarshal(raw, &delegates); err != nil {
		return nil, fmt.Errorf("multus cache %s: %w", Path(dir, containerID), err)
	}
	if len(delegates) == 0 {
		return nil, fmt.Errorf("multus cache %s: no delegates", Path(dir, containerID))
	}
	for i, d := range delegates {
		if d == nil || len(d.Bytes) == 0 {
			return nil, fmt.Errorf("multus cache %s: delegate %d has no config", Path(dir, containerID), i)
		}
		d.ConfListPlugin = len(d.ConfList.Plugins) != 0
	}
	delegates[0].MasterPlugin = true
	return delegates, nil
}

// WriteDelegates writes a container's delegates file exactly as Multus's
// saveDelegates and saveScratchNetConf do (tests reproduce Multus's state
// with it; a roll-back to Multus can leave files Multus's DEL reads).
func WriteDelegates(dir, containerID string, delegates []*DelegateNetConf) error {
	raw, err := json.Marshal(delegates)
	if err != nil {
		return fmt.Errorf("multus cache: encoding delegates: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("multus cache: %w", err)
	}
	if err := os.WriteFile(Path(dir, containerID), raw, 0o600); err != nil {
		return fmt.Errorf("multus cache: %w", err)
	}
	return nil
}

// NewDelegate makes the delegate Multus's LoadDelegateNetConf
// (pkg/types/conf.go) makes of a config: a config list when it has no
// top-level type, named after the config unless name (a NAD's
// "namespace/name") is given.
func NewDelegate(config []byte, name string) (*DelegateNetConf, error) {
	d := &DelegateNetConf{Bytes: config}
	if err := json.Unmarshal(config, &d.Conf); err != nil {
		return nil, fmt.Errorf("delegate config: %w", err)
	}
	d.Name = d.Conf.Name
	if d.Conf.Type == "" {
		if err := json.Unmarshal(config, &d.ConfList); err != nil {
			return nil, fmt.Errorf("delegate config list: %w", err)
		}
		if len(d.ConfList.Plugins) == 0 || d.ConfList.Plugins[0].Type == "" {
			return nil, errors.New("delegate config has neither a type nor plugins")
		}
		d.ConfListPlugin, d.Name = true, d.ConfList.Name
	}
	if name != "" {
		d.Name = name
	}
	return d, nil
}

// IfName is the interface name Multus gives delegate idx (getIfname in
// pkg/multus/multus.go): the requested one, the runtime's for the master
// plugin, else net<idx>.
func IfName(d *DelegateNetConf, runtimeIfName string, idx int) string {
	switch {
	case d.IfnameRequest != "":
		return d.IfnameRequest
	case d.MasterPlugin:
		return runtimeIfName
	}
	return fmt.Sprintf("net%d", idx)
}

// NetworkName is the CNI network name of the delegate's config (libcni's
// cache files are named after it).
func (d *DelegateNetConf) NetworkName() string {
	if d.ConfListPlugin {
		return d.ConfList.Name
	}
	return d.Conf.Name
}

// CNIVersion is the CNI version of the delegate's config.
func (d *DelegateNetConf) CNIVersion() string {
	if d.ConfListPlugin {
		return d.ConfList.CNIVersion
	}
	return d.Conf.CNIVersion
}

// ConfigList returns the delegate's config as a CNI config list: a list as
// it is, a single config wrapped in one the way libcni.ConfListFromConf
// does (same name and version, so the plugin gets the same config and
// libcni's cache the same key as under Multus's AddNetwork).
func (d *DelegateNetConf) ConfigList() ([]byte, error) {
	if d.ConfListPlugin {
		if _, err := libcni.ConfListFromBytes(d.Bytes); err != nil {
			return nil, fmt.Errorf("delegate %s: %w", d.Name, err)
		}
		return d.Bytes, nil
	}
	conf, err := libcni.ConfFromBytes(d.Bytes)
	if err != nil {
		return nil, fmt.Errorf("delegate %s: %w", d.Name, err)
	}
	list, err := libcni.ConfListFromConf(conf)
	if err != nil {
		return nil, fmt.Errorf("delegate %s: %w", d.Name, err)
	}
	return list.Bytes, nil
}

// CachedResult is one of libcni's result cache files: libcni's cachedInfo
// (libcni/api.go), field for field.
type CachedResult struct {
	Kind           string                 `json:"kind"`
	ContainerID    string                 `json:"containerId"`
	Config         []byte                 `json:"config"`
	IfName         string                 `json:"ifName"`
	NetworkName    string                 `json:"networkName"`
	NetNS          string                 `json:"netns,omitempty"`
	CniArgs        [][2]string            `json:"cniArgs,omitempty"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
	RawResult      map[string]interface{} `json:"result,omitempty"`

	// File is the file's name under results/ and Raw its content.
	File string `json:"-"`
	Raw  []byte `json:"-"`
}

// ReadResults returns libcni's cached results for a container under dir
// (files of another kind or container are skipped, as libcni's
// GetCachedAttachments skips them), sorted by file name.
func ReadResults(dir, containerID string) ([]*CachedResult, error) {
	entries, err := os.ReadDir(leancni.ResultsDir(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("multus cache: %w", err)
	}
	var out []*CachedResult
	for _, e := range entries {
		if containerID != "" && !strings.Contains(e.Name(), "-"+containerID+"-") {
			continue
		}
		c, err := readResult(dir, e.Name())
		if err != nil || c == nil || containerID != "" && c.ContainerID != containerID {
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, nil
}

func readResult(dir, name string) (*CachedResult, error) {
	raw, err := os.ReadFile(filepath.Join(leancni.ResultsDir(dir), name))
	if err != nil {
		return nil, err
	}
	c := &CachedResult{}
	if err := json.Unmarshal(raw, c); err != nil || c.Kind != CacheKind || c.IfName == "" || c.NetworkName == "" {
		return nil, err
	}
	c.File, c.Raw = name, raw
	return c, nil
}

// arg returns the value of a CNI_ARGS key of the cached call ("" if none).
func (c *CachedResult) arg(key string) string {
	for _, kv := range c.CniArgs {
		if kv[0] == key {
			return kv[1]
		}
	}
	return ""
}

// Containers lists the container IDs that have a delegates file in dir,
// all of them when podUID is empty, else those whose cached calls name
// that pod (K8S_POD_UID in their CNI_ARGS).
func Containers(dir, podUID string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("multus cache: %w", err)
	}
	has := map[string]bool{}
	for _, e := range entries {
		if e.Type().IsRegular() && validID.MatchString(e.Name()) {
			has[e.Name()] = true
		}
	}
	if podUID == "" {
		return sortedKeys(has), nil
	}
	results, err := ReadResults(dir, "")
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, r := range results {
		if has[r.ContainerID] && r.arg("K8S_POD_UID") == podUID {
			mine[r.ContainerID] = true
		}
	}
	return sortedKeys(mine), nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Remove deletes what Multus keeps for a container: its delegates file (as
// CmdDel does after the DEL) and libcni's result cache files of it (as
// libcni's DEL of each delegate does). Missing files are not an error.
func Remove(dir, containerID string) error {
	if !validID.MatchString(containerID) {
		return fmt.Errorf("multus cache: invalid container ID %q", containerID)
	}
	results, err := ReadResults(dir, containerID)
	var errs []error
	for _, r := range results {
		errs = append(errs, removeIfExists(filepath.Join(leancni.ResultsDir(dir), r.File)))
	}
	errs = append(errs, err, removeIfExists(Path(dir, containerID)))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("multus cache: %w", err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
