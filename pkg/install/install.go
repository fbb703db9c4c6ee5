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
)

// Options say what to install where.
type Options struct {
	Plugin     string // the rewire binary to install
	BinDir     string // the host's CNI bin dir
	ConfDir    string // the host's CNI conf dir
	ConfName   string // default 00-rewire.conflist (sorts first)
	Socket     string // daemon socket the plugin talks to
	CNIVersion string // default 1.1.0
}

// Config returns Rewire's CNI config list for the runtime.
func Config(socket, cniVersion string) ([]byte, error) {
	return json.MarshalIndent(map[string]interface{}{
		"cniVersion": cniVersion,
		"name":       "rewire-cni-network",
		"plugins": []interface{}{map[string]interface{}{
			"type":         "rewire",
			"socketPath":   socket,
			"capabilities": map[string]bool{"portMappings": true, "bandwidth": true},
		}},
	}, "", "  ")
}

// Run installs the plugin and the config; it is idempotent.
func Run(o Options) error {
	if o.ConfName == "" {
		o.ConfName = "00-rewire.conflist"
	}
	if o.CNIVersion == "" {
		o.CNIVersion = "1.1.0"
	}
	src, err := os.Open(o.Plugin)
	if err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	defer src.Close()
	if err := writeAtomic(filepath.Join(o.BinDir, "rewire"), 0o755, src); err != nil {
		return err
	}
	conf, err := Config(o.Socket, o.CNIVersion)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(o.ConfDir, o.ConfName), 0o644, bytes.NewReader(conf))
}

// writeAtomic writes r to a temp file in path's dir, syncs it and renames it
// over path.
func writeAtomic(path string, mode os.FileMode, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, r)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	}
	return nil
}
