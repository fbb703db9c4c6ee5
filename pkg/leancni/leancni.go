// Package leancni is a libcni.CNI whose AddNetworkList does what libcni's
// does, with less work: the same plugin lookup, name checks, config
// injection (name, cniVersion, prevResult, runtimeConfig of the declared
// capabilities), environment, result conversion and cache file, but each
// plugin's config encoded once (libcni decodes and encodes it twice, and
// its result three times for the cache) and the process environment
// deduplicated once. ADD is on every pod start; DEL, CHECK, GC and STATUS
// stay libcni's and read the cache files this one writes.
package leancni

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
)

// CNI is libcni's CNIConfig for path, cacheDir and exec, with the lean ADD.
type CNI struct {
	libcni.CNI
	path     []string
	cacheDir string
	exec     invoke.Exec

	mu      sync.Mutex
	environ []string // the process environment env was made from
	env     []string // environ deduplicated, without the CNI_ variables set per call
	parsed  map[string]map[string]any
}

// New returns the CNI that runs the plugins in path with exec and keeps
// its cache in cacheDir, as libcni.NewCNIConfigWithCacheDir does.
func New(path []string, cacheDir string, exec invoke.Exec) *CNI {
	if cacheDir == "" {
		cacheDir = libcni.CacheDir
	}
	return &CNI{
		CNI:  libcni.NewCNIConfigWithCacheDir(path, cacheDir, exec),
		path: path, cacheDir: cacheDir, exec: exec,
	}
}

// AddNetworkList runs ADD of every plugin of list in order, each given the
// previous one's result, and caches the last result as libcni does.
func (c *CNI) AddNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	var result types.Result
	for _, p := range list.Plugins {
		r, err := c.add(ctx, list, p, result, rt)
		if err != nil {
			return nil, fmt.Errorf("plugin %s failed (add): %w", describe(p.Network), err)
		}
		result = r
	}
	if err := c.cache(result, list, rt); err != nil {
		return nil, fmt.Errorf("failed to set network %q cached result: %w", list.Name, err)
	}
	return result, nil
}

func (c *CNI) add(ctx context.Context, list *libcni.NetworkConfigList, p *libcni.PluginConfig, prev types.Result, rt *libcni.RuntimeConf) (types.Result, error) {
	path, err := c.exec.FindInPath(p.Network.Type, c.path)
	if err != nil {
		return nil, err
	}
	if err := utils.ValidateContainerID(rt.ContainerID); err != nil {
		return nil, err
	}
	if err := utils.ValidateNetworkName(list.Name); err != nil {
		return nil, err
	}
	if err := utils.ValidateInterfaceName(rt.IfName); err != nil {
		return nil, err
	}
	conf, err := c.config(list, p, prev, rt)
	if err != nil {
		return nil, err
	}
	return invoke.ExecPluginWithResult(ctx, path, conf, args{c.baseEnv(), "ADD", rt, strings.Join(c.path, string(os.PathListSeparator))}, c.exec)
}

// config is the plugin's config as libcni's buildOneConfig makes it: the
// list's name and cniVersion, the previous result, and as runtimeConfig
// the capability arguments of the capabilities the plugin declares.
func (c *CNI) config(list *libcni.NetworkConfigList, p *libcni.PluginConfig, prev types.Result, rt *libcni.RuntimeConf) ([]byte, error) {
	orig, err := c.parse(p.Bytes)
	if err != nil {
		return nil, fmt.Errorf("unmarshal existing network bytes: %w", err)
	}
	conf := maps.Clone(orig) // orig is shared: only top-level keys are set
	conf["name"], conf["cniVersion"] = list.Name, list.CNIVersion
	if prev != nil {
		conf["prevResult"] = prev
	}
	rc := map[string]any{}
	for capability, supported := range p.Network.Capabilities {
		if data, ok := rt.CapabilityArgs[capability]; supported && ok {
			rc[capability] = data
		}
	}
	if len(rc) > 0 {
		conf["runtimeConfig"] = rc
	}
	return json.Marshal(conf)
}

// parsedMax bounds the plugin configs kept decoded (configs may be per
// pod: a device ID, static addresses).
const parsedMax = 256

// parse decodes a plugin config, once while it is among the last parsedMax.
func (c *CNI) parse(raw []byte) (map[string]any, error) {
	c.mu.Lock()
	m, ok := c.parsed[string(raw)]
	c.mu.Unlock()
	if ok {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parsed == nil || len(c.parsed) >= parsedMax {
		c.parsed = map[string]map[string]any{}
	}
	c.parsed[string(raw)] = m
	return m, nil
}

// baseEnv is the process environment as libcni passes it to plugins
// (deduplicated, the last value of a name kept), without the variables
// args sets; remade only when the environment changed.
func (c *CNI) baseEnv() []string {
	environ := os.Environ()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.env != nil && slices.Equal(environ, c.environ) {
		return c.env
	}
	last := map[string]string{}
	var names, bare []string
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			bare = append(bare, kv) // kept as is, as libcni does
		case cniVars[name]:
		default:
			if _, seen := last[name]; !seen {
				names = append(names, name)
			}
			last[name] = value
		}
	}
	env := bare
	for _, name := range names {
		env = append(env, name+"="+last[name])
	}
	c.environ, c.env = environ, slices.Clip(env)
	return c.env
}

// cniVars are the variables args sets on every call.
var cniVars = map[string]bool{"CNI_COMMAND": true, "CNI_CONTAINERID": true, "CNI_NETNS": true,
	"CNI_ARGS": true, "CNI_IFNAME": true, "CNI_PATH": true}

// args is invoke.Args with the environment already deduplicated.
type args struct {
	env     []string
	command string
	rt      *libcni.RuntimeConf
	path    string
}

func (a args) AsEnv() []string {
	pairs := make([]string, len(a.rt.Args))
	for i, kv := range a.rt.Args {
		pairs[i] = kv[0] + "=" + kv[1]
	}
	return append(slices.Clip(a.env),
		"CNI_COMMAND="+a.command,
		"CNI_CONTAINERID="+a.rt.ContainerID,
		"CNI_NETNS="+a.rt.NetNS,
		"CNI_ARGS="+strings.Join(pairs, ";"),
		"CNI_IFNAME="+a.rt.IfName,
		"CNI_PATH="+a.path,
	)
}

// cached is libcni's cache file format (cachedInfo, kind cniCacheV1).
type cached struct {
	Kind           string          `json:"kind"`
	ContainerID    string          `json:"containerId"`
	Config         []byte          `json:"config"`
	IfName         string          `json:"ifName"`
	NetworkName    string          `json:"networkName"`
	NetNS          string          `json:"netns,omitempty"`
	CniArgs        [][2]string     `json:"cniArgs,omitempty"`
	CapabilityArgs map[string]any  `json:"capabilityArgs,omitempty"`
	Result         json.RawMessage `json:"result,omitempty"`
}

// cache writes the list's result where libcni's DEL, CHECK and
// GetCachedAttachments read it.
func (c *CNI) cache(result types.Result, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	if list.Name == "" || rt.ContainerID == "" || rt.IfName == "" {
		return fmt.Errorf("cache file path requires network name (%q), container ID (%q), and interface name (%q)", list.Name, rt.ContainerID, rt.IfName)
	}
	var res json.RawMessage
	if result != nil {
		var err error
		if res, err = json.Marshal(result); err != nil {
			return err
		}
	}
	data, err := json.Marshal(cached{Kind: libcni.CNICacheV1, ContainerID: rt.ContainerID, Config: list.Bytes, IfName: rt.IfName,
		NetworkName: list.Name, NetNS: rt.NetNS, CniArgs: rt.Args, CapabilityArgs: rt.CapabilityArgs, Result: res})
	if err != nil {
		return err
	}
	dir := filepath.Join(c.cacheDir, "results")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%s-%s", list.Name, rt.ContainerID, rt.IfName)), data, 0o600)
}

// describe names a plugin in errors as libcni does.
func describe(p *types.PluginConf) string {
	if p == nil {
		return "<missing>"
	}
	out := fmt.Sprintf("type=%q", p.Type)
	if p.Name != "" {
		out += fmt.Sprintf(" name=%q", p.Name)
	}
	return out
}
