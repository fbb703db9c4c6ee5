package nad

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// confExtensions are the file suffixes searched in a configuration directory,
// in the order libcni and the kubelet use.
var confExtensions = []string{".conf", ".conflist", ".json"}

// ConfList parses a CNI plugin config or config list, injects the network
// name when it is missing, checks that every plugin type is a bare name and
// none is Rewire's own (SelfTypes), and returns it as a config list.
// defaultName is the name to inject.
func ConfList(raw []byte, defaultName string) (*libcni.NetworkConfigList, error) {
	list, err := parse(raw, defaultName)
	if err != nil {
		return nil, err
	}
	if err := checkPluginTypes(list); err != nil {
		return nil, err
	}
	return list, nil
}

// parse is ConfList without the plugin type checks.
func parse(raw []byte, defaultName string) (*libcni.NetworkConfigList, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("invalid CNI config JSON: %w", err)
	}
	if top == nil {
		return nil, fmt.Errorf("invalid CNI config: not a JSON object")
	}
	if name, ok := top["name"]; !ok || string(name) == `""` {
		if defaultName == "" {
			return nil, fmt.Errorf("CNI config has no name")
		}
		n, _ := json.Marshal(defaultName)
		top["name"] = n
		var err error
		if raw, err = json.Marshal(top); err != nil {
			return nil, fmt.Errorf("re-encoding CNI config: %w", err)
		}
	}
	if _, ok := top["cniVersion"]; !ok {
		return nil, fmt.Errorf("CNI config %q has no cniVersion", defaultName)
	}
	var list *libcni.NetworkConfigList
	var err error
	if _, ok := top["plugins"]; ok {
		list, err = libcni.ConfListFromBytes(raw)
	} else {
		var conf *libcni.PluginConfig
		if conf, err = libcni.ConfFromBytes(raw); err == nil {
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("invalid CNI config: %w", err)
	}
	return list, nil
}

// checkPluginTypes rejects configs whose plugin (or IPAM) type is not a bare
// executable name (a type is looked up in the CNI bin dirs, never a path)
// or is one of Rewire's own binaries (SelfTypes): Rewire never delegates to
// itself.
func checkPluginTypes(list *libcni.NetworkConfigList) error {
	if len(list.Plugins) == 0 {
		return fmt.Errorf("CNI config %q has no plugins", list.Name)
	}
	for i, p := range list.Plugins {
		if err := checkPlugin(p); err != nil {
			return fmt.Errorf("CNI config %q plugin %d: %w", list.Name, i, err)
		}
	}
	return nil
}

// checkPlugin checks the plugin and IPAM type of one plugin config.
func checkPlugin(p *libcni.PluginConfig) error {
	if err := delegateType(p.Network.Type); err != nil {
		return fmt.Errorf("type: %w", err)
	}
	if p.Network.IPAM.Type != "" {
		if err := delegateType(p.Network.IPAM.Type); err != nil {
			return fmt.Errorf("ipam type: %w", err)
		}
	}
	return nil
}

// delegateType checks one plugin or IPAM type.
func delegateType(t string) error {
	if err := bareName(t); err != nil {
		return err
	}
	return checkSelf(t)
}

func bareName(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("missing")
	case t == "." || t == ".." || strings.ContainsAny(t, "/\\\x00"):
		return fmt.Errorf("%q must be a bare plugin name, not a path", t)
	}
	return nil
}

// FindConfByName searches dir for a CNI config whose network name is name.
// The name is compared with the "name" inside each file; it is never used to
// build a path, so a lookup cannot escape dir. The file found is checked
// like an inline config: Rewire's own conflist (written by `rewired install`,
// plugin type "rewire") or a plugin type that is a path is refused, naming
// the file.
func FindConfByName(dir, name string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(dir, confExtensions)
	if err != nil {
		return nil, fmt.Errorf("reading config dir %s: %w", dir, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		list, err := parse(raw, "")
		if err != nil || list.Name != name {
			continue // another network's broken file must not hide this one
		}
		if err := checkPluginTypes(list); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		return list, nil
	}
	return nil, fmt.Errorf("no CNI config named %q in %s", name, dir)
}

// LoadFile loads one CNI config or config list file.
func LoadFile(path, defaultName string) (*libcni.NetworkConfigList, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	list, err := ConfList(raw, defaultName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return list, nil
}

// multusTypes are the plugin types of Multus's own CNI config (thin and
// thick): one left in the runtime's directory (after a move from Multus, or
// a Multus daemon's auto-detected directory) is never the cluster network,
// which it would only delegate back from.
var multusTypes = map[string]bool{"multus": true, "multus-shim": true}

// LoadPath loads a CNI config from a file, or from a directory the way the
// kubelet picks its network: the first loadable file in lexical order,
// skipping configs whose first plugin has type skipType (Rewire's own) or
// is Multus.
func LoadPath(path, skipType string) (*libcni.NetworkConfigList, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return LoadFile(path, "")
	}
	files, err := libcni.ConfFiles(path, confExtensions)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		list, err := LoadFile(f, "")
		if err != nil || list.Plugins[0].Network.Type == skipType || multusTypes[list.Plugins[0].Network.Type] {
			continue
		}
		return list, nil
	}
	return nil, fmt.Errorf("no usable CNI config in %s", path)
}

// Capabilities returns the union of the capabilities declared by the plugins
// of a config list.
func Capabilities(list *libcni.NetworkConfigList) map[string]bool {
	caps := map[string]bool{}
	for _, p := range list.Plugins {
		for k, v := range p.Network.Capabilities {
			if v {
				caps[k] = true
			}
		}
	}
	return caps
}

// ConfDirPolicy says whether a NAD in namespace may take its config from
// confDir (an empty spec.config), and when not, why and what to do instead.
type ConfDirPolicy func(namespace string) error

// Resolve returns the config list a NAD stands for: its spec.config, or when
// that is empty the file in confDir whose network name is the NAD's name,
// if allowed lets the NAD's namespace do so (nil allows every namespace).
func Resolve(n *NetworkAttachmentDefinition, confDir string, allowed ConfDirPolicy) (*libcni.NetworkConfigList, error) {
	if strings.TrimSpace(n.Spec.Config) == "" {
		if allowed != nil {
			if err := allowed(n.Namespace); err != nil {
				return nil, fmt.Errorf("NetworkAttachmentDefinition %s has no spec.config: %w", n.Key(), err)
			}
		}
		list, err := FindConfByName(confDir, n.Name)
		if err != nil {
			return nil, fmt.Errorf("NetworkAttachmentDefinition %s has no spec.config: %w", n.Key(), err)
		}
		return list, nil
	}
	list, err := ConfList([]byte(n.Spec.Config), n.Name)
	if err != nil {
		return nil, fmt.Errorf("NetworkAttachmentDefinition %s: %w", n.Key(), err)
	}
	return list, nil
}
