// Package install puts Rewire on a node: the rewire plugin binary into the
// CNI bin dir and Rewire's network config first in the CNI conf dir, each
// written to a temporary name and renamed, so that a runtime never executes
// a half-copied binary or reads a half-written config.
package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rewire-cni/rewire/pkg/fsutil"
)

// Options say what to install where.
type Options struct {
	Plugin     string // the rewire binary to install (the Go plugin it runs, rewire-plugin, is taken from its directory)
	Offline    string // rewired itself, installed as rewire-offline (DEL while no daemon runs)
	StateDir   string // rewired's state dir as seen on the host (default /var/lib/rewire)
	BinDir     string // the host's CNI bin dir
	ConfDir    string // the host's CNI conf dir
	Socket     string // daemon socket the plugin talks to
	CNIVersion string // default 1.1.0
	// ConfName is Rewire's config file, default 00-rewire.conflist (sorts
	// first). Several names, comma-separated, are those another meta
	// plugin may have written (Multus: 00-multus.conf or, for a CNI 1.0.0
	// cluster network, 00-multus.conflist): Rewire's config is written over
	// the one the runtime reads now (see Target).
	ConfName string
}

// NetworkName is the network name of Rewire's CNI config, unless it
// replaces another meta plugin's file (see Run).
const NetworkName = "rewire-cni-network"

// Config returns Rewire's CNI config list for the runtime.
func Config(socket, stateDir, cniVersion string) ([]byte, error) {
	return config(socket, stateDir, cniVersion, NetworkName)
}

func config(socket, stateDir, cniVersion, name string) ([]byte, error) {
	return json.MarshalIndent(map[string]interface{}{
		"cniVersion": cniVersion,
		"name":       name,
		"plugins": []interface{}{map[string]interface{}{
			"type":         "rewire",
			"socketPath":   socket,
			"stateDir":     stateDir,
			"capabilities": map[string]bool{"portMappings": true, "bandwidth": true},
		}},
	}, "", "  ")
}

// Run installs the plugin and the config; it is idempotent. A config
// written over another meta plugin's file (Multus's) keeps that file's
// network name: the runtime keys its libcni cache of each pod by it, so
// that its DEL of a pod the other plugin networked finds and removes the
// cache entry of the ADD.
func Run(o Options) error {
	if o.ConfName == "" {
		o.ConfName = "00-rewire.conflist"
	}
	o.ConfName = Target(o.ConfDir, o.ConfName)
	if o.CNIVersion == "" {
		o.CNIVersion = "1.1.0"
	}
	// The Go plugin first: the one installed as rewire may run it at once.
	if err := copyFile(filepath.Join(filepath.Dir(o.Plugin), GoPluginName), filepath.Join(o.BinDir, GoPluginName)); err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	if err := copyFile(o.Plugin, filepath.Join(o.BinDir, "rewire")); err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	if o.Offline != "" {
		if err := copyFile(o.Offline, filepath.Join(o.BinDir, OfflineName)); err != nil {
			return err
		}
	}
	if o.StateDir == "" {
		o.StateDir = "/var/lib/rewire"
	}
	path := filepath.Join(o.ConfDir, o.ConfName)
	conf, err := config(o.Socket, o.StateDir, o.CNIVersion, networkName(path))
	if err != nil {
		return err
	}
	if ext := filepath.Ext(o.ConfName); ext == ".conf" || ext == ".json" {
		// A runtime reads such a file as one network config, not a list:
		// Rewire's plugin with the list's name and version (installing over
		// Multus's 00-multus.conf replaces it in one rename).
		if conf, err = single(conf); err != nil {
			return err
		}
	}
	return writeAtomic(path, 0o644, bytes.NewReader(conf))
}

// networkName is the network name of the CNI config at path, NetworkName
// when there is none (no file, not a config).
func networkName(path string) string {
	var c struct {
		Name string `json:"name"`
	}
	if raw, err := os.ReadFile(path); err == nil && json.Unmarshal(raw, &c) == nil && c.Name != "" {
		return c.Name
	}
	return NetworkName
}

// Target is the file name Rewire's config is written as, of names (one, or
// several comma-separated): the first of them in file name order that
// exists in confDir, which is the one of them the runtime reads, else the
// first given.
func Target(confDir, names string) string {
	list := strings.Split(names, ",")
	for i := range list {
		list[i] = strings.TrimSpace(list[i])
	}
	sorted := slices.Clone(list)
	slices.Sort(sorted)
	for _, n := range sorted {
		if _, err := os.Stat(filepath.Join(confDir, n)); n != "" && err == nil {
			return n
		}
	}
	return list[0]
}

// single turns a one-plugin config list into that plugin's network config.
func single(list []byte) ([]byte, error) {
	var l struct {
		CNIVersion string                   `json:"cniVersion"`
		Name       string                   `json:"name"`
		Plugins    []map[string]interface{} `json:"plugins"`
	}
	if err := json.Unmarshal(list, &l); err != nil || len(l.Plugins) != 1 {
		return nil, fmt.Errorf("rewire's config list: %v", err)
	}
	p := l.Plugins[0]
	p["cniVersion"], p["name"] = l.CNIVersion, l.Name
	return json.MarshalIndent(p, "", "  ")
}

// OfflineName is rewired's copy in the CNI bin dir: the plugin runs it for
// a DEL when no daemon is there (Rewire uninstalled, or not started).
const OfflineName = "rewire-offline"

// GoPluginName is the Go plugin (cmd/rewire) in the bin dir: the C plugin
// installed as rewire (shim/rewire.c) runs it for what it does not serve.
const GoPluginName = "rewire-plugin"

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	defer src.Close()
	return writeAtomic(to, 0o755, src)
}

// writeAtomic writes r to path (synced, then renamed over it).
func writeAtomic(path string, mode os.FileMode, r io.Reader) error {
	err := os.MkdirAll(filepath.Dir(path), 0o755)
	if err == nil {
		err = fsutil.WriteAtomic(path, mode, r, true)
	}
	if err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	return nil
}
