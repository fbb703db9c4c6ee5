package nad

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// Plugins chained to a network from files (CNI spec 1.1, "Plugin
// configuration objects"; libcni's NetworkPluginConfsFromFiles): the
// directory named like the network, next to its config file, holds one
// plugin config object per *.conf file. libcni appends them, in file name
// order, to the network's own plugins unless the network says
// loadOnlyInlinedPlugins; Multus (since its subdirectory-chain support)
// does the same for the cluster network, and its auxiliaryCNIChainName
// names one more such directory, run for every pod.

// chainExtension is the suffix of the plugin config files of a chain
// directory, the only one libcni reads there.
const chainExtension = ".conf"

// ChainDir is the directory of the plugins chained to the network or chain
// name, next to the config files in dir; ok is false when name cannot name
// one directory (empty, ".", "..", or with a path separator, which the CNI
// spec forbids in a network name), so that a name never leads out of dir.
func ChainDir(dir, name string) (string, bool) {
	if err := ChainName(name); err != nil {
		return "", false
	}
	return filepath.Join(dir, name), true
}

// ChainName checks that name can name a chain directory: one path element.
func ChainName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%q is not a single directory name", name)
	}
	return nil
}

// ChainedPlugins reads the plugins of the chain directory dir/name: one
// plugin config object per *.conf file, in file name order. A missing
// directory holds none. A file that cannot be read or parsed, that has no
// type, or whose plugin or IPAM type is a path or Rewire's own is an error
// naming the file: a broken file never drops its plugin silently.
func ChainedPlugins(dir, name string) ([]*libcni.PluginConfig, error) {
	path, ok := ChainDir(dir, name)
	if !ok {
		return nil, nil
	}
	files, err := libcni.ConfFiles(path, []string{chainExtension})
	if err != nil {
		return nil, fmt.Errorf("reading chained plugins in %s: %w", path, err)
	}
	slices.Sort(files)
	plugins := make([]*libcni.PluginConfig, 0, len(files))
	for _, f := range files {
		p, err := loadChainedPlugin(f)
		if err != nil {
			return nil, fmt.Errorf("chained plugin %s: %w", f, err)
		}
		plugins = append(plugins, p)
	}
	return plugins, nil
}

// loadChainedPlugin reads one plugin config object and checks its types.
func loadChainedPlugin(file string) (*libcni.PluginConfig, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if obj == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	if _, ok := obj["plugins"]; ok {
		return nil, fmt.Errorf("a config list: a chain directory holds one plugin config object per file")
	}
	p, err := libcni.NetworkPluginConfFromBytes(raw)
	if err != nil {
		return nil, err
	}
	if err := checkPlugin(p); err != nil {
		return nil, err
	}
	return p, nil
}

// AppendPlugins returns a copy of list with plugins after its own. Its
// Bytes hold them all, so that a record of the attachment (and its DEL, GC
// and CHECK) has the whole chain; list itself is not changed.
func AppendPlugins(list *libcni.NetworkConfigList, plugins []*libcni.PluginConfig) (*libcni.NetworkConfigList, error) {
	if len(plugins) == 0 {
		return list, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(list.Bytes, &top); err != nil {
		return nil, fmt.Errorf("CNI config %q: %w", list.Name, err)
	}
	var all []json.RawMessage
	if raw, ok := top["plugins"]; ok {
		if err := json.Unmarshal(raw, &all); err != nil {
			return nil, fmt.Errorf("CNI config %q: plugins: %w", list.Name, err)
		}
	}
	for _, p := range plugins {
		all = append(all, p.Bytes)
	}
	var err error
	if top["plugins"], err = json.Marshal(all); err != nil {
		return nil, fmt.Errorf("CNI config %q: appending chained plugins: %w", list.Name, err)
	}
	raw, err := json.Marshal(top)
	if err != nil {
		return nil, fmt.Errorf("CNI config %q: appending chained plugins: %w", list.Name, err)
	}
	out, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("CNI config %q with its chained plugins: %w", list.Name, err)
	}
	return out, nil
}

// WithChains returns list with the plugins chained to it from dir, the
// directory its config file is in, appended after its own: first those of
// its own chain directory dir/<network name> (unless the list says
// loadOnlyInlinedPlugins, as libcni skips them then), then those of the
// auxiliary chain dir/<auxiliary> when auxiliary is set (Multus's
// auxiliaryCNIChainName). Directories that do not exist add nothing.
func WithChains(list *libcni.NetworkConfigList, dir, auxiliary string) (*libcni.NetworkConfigList, error) {
	var chained []*libcni.PluginConfig
	if !list.LoadOnlyInlinedPlugins {
		own, err := ChainedPlugins(dir, list.Name)
		if err != nil {
			return nil, fmt.Errorf("CNI config %q: %w", list.Name, err)
		}
		chained = own
	}
	if auxiliary != "" && (auxiliary != list.Name || list.LoadOnlyInlinedPlugins) {
		if err := ChainName(auxiliary); err != nil {
			return nil, fmt.Errorf("auxiliary CNI chain: %w", err)
		}
		aux, err := ChainedPlugins(dir, auxiliary)
		if err != nil {
			return nil, fmt.Errorf("auxiliary CNI chain %q: %w", auxiliary, err)
		}
		chained = append(chained, aux...)
	}
	return AppendPlugins(list, chained)
}
