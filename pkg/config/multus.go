package config

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// Multus's own configuration (a thin plugin's 00-multus.conf, a thick
// daemon's daemon-config.json, or the two merged) is accepted as Rewire's
// config file. Its keys are those of Multus's NetConf (pkg/types), its
// daemon's ControllerNetConf and MultusConf (pkg/server, pkg/server/config)
// and the CNI NetConf they embed, matched case-insensitively as Go's JSON
// decoder does (Multus's docs write "LogFile"). Keys Rewire has under the
// same name (clusterNetwork, defaultNetworks, systemNamespaces,
// multusNamespace, namespaceIsolation, globalNamespaces, confDir, cniDir,
// readinessindicatorfile, auxiliaryCNIChainName, logLevel) are Rewire's;
// the others are translated when they mean something for Rewire, and
// otherwise ignored and listed in Config.Ignored, never an error.

// multusKeys are the keys Multus accepts that Rewire's Config does not
// have, lower-cased, with what Rewire makes of each.
var multusKeys = map[string]string{
	// The CNI NetConf embedded in Multus's.
	"cniversion":    "ignored (also the cniVersion of a delegates[0] without one)",
	"name":          "ignored",
	"type":          "ignored",
	"capabilities":  "ignored: Rewire's own CNI config declares the runtime's capabilities",
	"ipam":          "ignored",
	"dns":           "ignored",
	"prevresult":    "ignored",
	"runtimeconfig": "ignored",
	// Multus's NetConf.
	"bindir":             "searched first for plugins, before binDirs",
	"delegates":          "delegates[0] is the cluster network when clusterNetwork is absent",
	"kubeconfig":         "ignored: rewired takes --kubeconfig (in-cluster by default)",
	"logfile":            "ignored: rewired logs to stderr",
	"logtostderr":        "ignored",
	"logoptions":         "ignored",
	"retrydeleteonerror": "ignored: Rewire's DEL always attempts every delegate and keeps failures recorded",
	// The Multus daemon's (thick plugin).
	"chrootdir":           "ignored",
	"socketdir":           "ignored: rewired takes --socket-path",
	"daemonsocketdir":     "ignored",
	"metricsport":         "ignored: rewired takes --metrics-addr",
	"pernodecertificate":  "ignored",
	"cniconfigdir":        "where the cluster network is found without clusterNetwork (after multusAutoconfigDir)",
	"multusautoconfigdir": "where the cluster network is found without clusterNetwork",
	"multusconfigfile":    `"auto": the first config of that directory is the cluster network`,
	"multusmastercni":     "the cluster network's file in that directory",
	"forcecniversion":     "ignored",
	"overridenetworkname": "ignored",
}

// rewireKeys maps Rewire's config keys, lower-cased, to their spelling.
var rewireKeys = func() map[string]string {
	keys := map[string]string{}
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			keys[strings.ToLower(name)] = name
		}
	}
	return keys
}()

// multusConfig is a decoded config file, keyed by lower-cased key, with
// the Multus-only keys translate applied.
type multusConfig struct {
	keys map[string]json.RawMessage
	used map[string]bool
	// notes are ignored parts of used keys (delegates beyond the first).
	notes []string
}

// translation is a config rewritten in Rewire's keys.
type translation struct {
	json    []byte
	inline  json.RawMessage // the cluster network's config given inline
	ignored []string        // keys without a meaning for Rewire
}

// fromMultus rewrites a config (as JSON) that uses Multus's keys into
// Rewire's; it returns nil for a config with only Rewire's keys, which is
// decoded as it is (its unknown keys are errors, as ever). In a Multus
// config unknown keys are ignored, as Multus ignores them.
func fromMultus(js []byte) (*translation, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil || top == nil {
		return nil, nil // not an object: the strict decoder says why
	}
	m := &multusConfig{keys: map[string]json.RawMessage{}, used: map[string]bool{}}
	if plugin, notes := multusPlugin(top); plugin != nil {
		top, m.notes = plugin, notes
	}
	for k, v := range top {
		lk := strings.ToLower(k)
		if _, dup := m.keys[lk]; dup {
			return nil, fmt.Errorf("key %q given twice (keys are case-insensitive)", k)
		}
		m.keys[lk] = v
	}
	if !m.isMultus() && !m.isString("globalnamespaces") {
		return nil, nil
	}
	for _, step := range []func() error{m.namespaceList, m.binDirs} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	inline, err := m.clusterNetwork()
	if err != nil {
		return nil, err
	}
	t := &translation{inline: inline, ignored: m.notes}
	rewired := map[string]json.RawMessage{}
	for k, v := range m.keys {
		if name, ok := rewireKeys[k]; ok {
			rewired[name] = v
		} else if !m.used[k] {
			t.ignored = append(t.ignored, k) // Multus-only, or unknown to both
		}
	}
	sort.Strings(t.ignored)
	t.json, err = json.Marshal(rewired)
	return t, err
}

// multusTypes are the plugin types of Multus's thin plugin and thick shim.
var multusTypes = []string{"multus", "multus-shim"}

// multusPlugin returns the config Multus gets from a config list whose
// first plugin is Multus (nil for any other config): that plugin's keys
// with the list's name and cniVersion, as libcni hands them to it. Multus's
// thin entrypoint writes such a list, 00-multus.conflist, when the cluster
// network's config is CNI 1.0.0 (a single config, 00-multus.conf, for
// older versions). The list's other plugins (a chained plugin another
// installer appended) are not Multus's settings: they are noted as ignored.
func multusPlugin(top map[string]json.RawMessage) (map[string]json.RawMessage, []string) {
	var plugins []map[string]json.RawMessage
	if err := json.Unmarshal(top["plugins"], &plugins); err != nil || len(plugins) == 0 || plugins[0] == nil {
		return nil, nil
	}
	var typ string
	if err := json.Unmarshal(plugins[0]["type"], &typ); err != nil || !slices.Contains(multusTypes, typ) {
		return nil, nil
	}
	plugin := plugins[0]
	for _, k := range []string{"name", "cniVersion"} {
		if v, ok := top[k]; ok {
			plugin[k] = v
		}
	}
	var notes []string
	if len(plugins) > 1 {
		notes = append(notes, fmt.Sprintf("plugins[1:] (%d plugins chained after Multus in its config list)", len(plugins)-1))
	}
	return plugin, notes
}

// isMultus reports whether the config has a key only Multus has.
func (m *multusConfig) isMultus() bool {
	for k := range m.keys {
		if _, ok := multusKeys[k]; ok {
			return true
		}
	}
	return false
}

// isString reports whether key holds a JSON string.
func (m *multusConfig) isString(key string) bool {
	v, ok := m.keys[key]
	return ok && len(v) > 0 && v[0] == '"'
}

// namespaceList turns Multus's globalNamespaces, a comma-separated string,
// into Rewire's list.
func (m *multusConfig) namespaceList() error {
	if !m.isString("globalnamespaces") {
		return nil
	}
	list := []string{}
	for _, ns := range strings.Split(m.str("globalnamespaces"), ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			list = append(list, ns)
		}
	}
	m.keys["globalnamespaces"], _ = json.Marshal(list)
	return nil
}

// binDirs puts Multus's binDir first in Rewire's binDirs (Multus searches it
// before the runtime's plugin path); without binDirs the default follows.
func (m *multusConfig) binDirs() error {
	raw, ok := m.keys["bindir"]
	if !ok {
		return nil
	}
	var dir string
	if err := json.Unmarshal(raw, &dir); err != nil {
		return fmt.Errorf("binDir: %w", err)
	}
	dirs := []string{defaultBinDir}
	if v, ok := m.keys["bindirs"]; ok {
		if err := json.Unmarshal(v, &dirs); err != nil {
			return fmt.Errorf("binDirs: %w", err)
		}
	}
	if dir != "" && !slices.Contains(dirs, dir) {
		dirs = append([]string{dir}, dirs...)
	}
	m.keys["bindirs"], _ = json.Marshal(dirs)
	m.used["bindir"] = true
	return nil
}

// clusterNetwork fills in clusterNetwork when a Multus config names its
// cluster network another way: delegates[0] (returned as the inline
// config; Multus ignores delegates when clusterNetwork is set), or, for a
// thick daemon config, multusMasterCNI in multusAutoconfigDir (else
// cniConfigDir), or with multusConfigFile "auto" that directory itself: its
// first config that is neither Rewire's nor Multus's own.
func (m *multusConfig) clusterNetwork() (json.RawMessage, error) {
	if m.str("clusternetwork") != "" {
		return nil, nil
	}
	if raw, ok := m.keys["delegates"]; ok {
		var delegates []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &delegates); err != nil {
			return nil, fmt.Errorf("delegates: %w", err)
		}
		if len(delegates) > 0 {
			if len(delegates) > 1 {
				m.notes = append(m.notes, fmt.Sprintf("delegates[1:] (%d networks: declare them as NADs in defaultNetworks)", len(delegates)-1))
			}
			return m.inlineDelegate(delegates[0])
		}
	}
	dirKey := "multusautoconfigdir"
	if m.str(dirKey) == "" {
		dirKey = "cniconfigdir"
	}
	dir := m.str(dirKey)
	switch master, file := m.str("multusmastercni"), m.str("multusconfigfile"); {
	case dir == "":
	case master != "":
		m.setStr("clusternetwork", filepath.Join(dir, master))
		m.use(dirKey, "multusmastercni", "multusconfigfile")
	case file == "" || file == "auto":
		m.setStr("clusternetwork", dir)
		m.use(dirKey, "multusconfigfile")
	}
	return nil, nil
}

// delegateName names a delegate that has no name (the name Multus's thin
// entrypoint gives the delegate it generates).
const delegateName = "default-cni-network"

// inlineDelegate makes a Multus delegate the cluster network: its config
// (with the top-level cniVersion when it has none, as Multus does, and a
// name when it has none) and, as clusterNetwork, its name.
func (m *multusConfig) inlineDelegate(d map[string]json.RawMessage) (json.RawMessage, error) {
	if _, ok := d["cniVersion"]; !ok {
		if v, ok := m.keys["cniversion"]; ok {
			d["cniVersion"] = v
		}
	}
	var name string
	_ = json.Unmarshal(d["name"], &name)
	if name == "" {
		name = delegateName
		d["name"], _ = json.Marshal(name)
	}
	m.setStr("clusternetwork", name)
	m.use("delegates")
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("delegates[0]: %w", err)
	}
	return raw, nil
}

func (m *multusConfig) use(keys ...string) {
	for _, k := range keys {
		m.used[k] = true
	}
}

func (m *multusConfig) str(key string) string {
	var s string
	_ = json.Unmarshal(m.keys[key], &s)
	return s
}

func (m *multusConfig) setStr(key, v string) { m.keys[key], _ = json.Marshal(v) }
