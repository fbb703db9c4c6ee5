// Package leancni is a libcni.CNI whose AddNetworkList and DelNetworkList
// do what libcni's do, with less work: the same plugin lookup, name
// checks, config injection (name, cniVersion, prevResult, runtimeConfig of
// the declared capabilities), environment, result conversion and cache
// file, but each plugin's config encoded once (libcni decodes and encodes
// it twice, and a result up to three times for the cache) and the process
// environment deduplicated once. ADD and DEL are on every pod's start and
// end; CHECK, GC and STATUS stay libcni's and read the same cache files.
package leancni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/rewire-cni/rewire/pkg/memo"
	"github.com/rewire-cni/rewire/pkg/steps"
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
	// parsed keeps plugin configs split (configs may be per pod: a device
	// ID, static addresses).
	parsed memo.Bounded[plugin]
	files  Files
	names  names
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
		parsed: memo.Bounded[plugin]{Max: 256},
		files:  direct{},
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
	steps.Mark(ctx, "libcni-cache-write")
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
	var prevJSON []byte
	if prev != nil {
		if prevJSON, err = EncodeResult(prev); err != nil {
			return nil, err
		}
	}
	conf, err := c.config(list, p, prevJSON, rt)
	if err != nil {
		return nil, err
	}
	out, err := c.exec.ExecPlugin(ctx, path, conf, c.args("ADD", rt).AsEnv())
	if err != nil {
		return nil, err
	}
	defer steps.Mark(ctx, "libcni-result")
	return parseResult(out, list.CNIVersion)
}

// args are the plugin's environment for command, as libcni's.
func (c *CNI) args(command string, rt *libcni.RuntimeConf) args {
	return args{c.baseEnv(), command, rt, strings.Join(c.path, string(os.PathListSeparator))}
}

// DelNetworkList runs DEL of every plugin of list in reverse order, each
// given the cached result (lists of 0.4.0 and later), and removes the
// cache entry, as libcni does.
func (c *CNI) DelNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	var prev []byte
	if gtet, err := version.GreaterThanOrEqualTo(list.CNIVersion, "0.4.0"); err != nil {
		return err
	} else if gtet {
		if prev, err = c.cachedResult(list, rt); err != nil {
			c.uncache(list, rt)
			prev = nil
		}
	}
	for i := len(list.Plugins) - 1; i >= 0; i-- {
		p := list.Plugins[i]
		if err := c.del(ctx, list, p, prev, rt); err != nil {
			return fmt.Errorf("plugin %s failed (delete): %w", describe(p.Network), err)
		}
	}
	c.uncache(list, rt)
	return nil
}

func (c *CNI) del(ctx context.Context, list *libcni.NetworkConfigList, p *libcni.PluginConfig, prev []byte, rt *libcni.RuntimeConf) error {
	path, err := c.exec.FindInPath(p.Network.Type, c.path)
	if err != nil {
		return err
	}
	conf, err := c.config(list, p, prev, rt)
	if err != nil {
		return err
	}
	return invoke.ExecPluginWithoutResult(ctx, path, conf, c.args("DEL", rt), c.exec)
}

// config is the plugin's config as libcni's buildOneConfig makes it: the
// list's name and cniVersion, the previous result (prev, encoded), and as
// runtimeConfig the capability arguments of the capabilities the plugin
// declares. Its other keys are encoded once per config (see plugin).
func (c *CNI) config(list *libcni.NetworkConfigList, p *libcni.PluginConfig, prev []byte, rt *libcni.RuntimeConf) ([]byte, error) {
	pl, err := c.parse(p.Bytes)
	if err != nil {
		return nil, fmt.Errorf("unmarshal existing network bytes: %w", err)
	}
	rc := map[string]any{}
	for capability, supported := range p.Network.Capabilities {
		if data, ok := rt.CapabilityArgs[capability]; supported && ok {
			rc[capability] = data
		}
	}
	runtimeConfig := pl.runtimeConfig
	if len(rc) > 0 {
		if runtimeConfig, err = json.Marshal(rc); err != nil {
			return nil, err
		}
	}
	if prev == nil {
		prev = pl.prevResult
	}
	name, err := json.Marshal(list.Name)
	if err != nil {
		return nil, err
	}
	version, err := json.Marshal(list.CNIVersion)
	if err != nil {
		return nil, err
	}
	conf := make([]byte, 0, len(pl.rest)+len(prev)+len(runtimeConfig)+64)
	conf = append(append(append(conf, `{"cniVersion":`...), version...), `,"name":`...)
	conf = append(conf, name...)
	if prev != nil {
		conf = append(append(conf, `,"prevResult":`...), prev...)
	}
	if runtimeConfig != nil {
		conf = append(append(conf, `,"runtimeConfig":`...), runtimeConfig...)
	}
	if len(pl.rest) > len("{}") {
		return append(append(conf, ','), pl.rest[1:]...), nil
	}
	return append(conf, '}'), nil
}

// plugin is a plugin config ready for the keys libcni sets in it: its
// other keys encoded once (rest, a JSON object), and its own values of the
// two keys libcni sets only sometimes.
type plugin struct {
	rest          []byte
	prevResult    json.RawMessage
	runtimeConfig json.RawMessage
}

// parse splits a plugin config, once while it is among the last kept.
func (c *CNI) parse(raw []byte) (plugin, error) {
	if pl, ok := c.parsed.Get(raw); ok {
		return pl, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return plugin{}, err
	}
	if m == nil {
		return plugin{}, errors.New("not a JSON object")
	}
	pl := plugin{prevResult: m["prevResult"], runtimeConfig: m["runtimeConfig"]}
	for _, k := range []string{"name", "cniVersion", "prevResult", "runtimeConfig"} {
		delete(m, k)
	}
	var err error
	if pl.rest, err = json.Marshal(m); err != nil {
		return plugin{}, err
	}
	c.parsed.Put(raw, pl)
	return pl, nil
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
