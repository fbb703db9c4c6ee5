package nad

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/pkg/invoke"
)

// SelfTypes are the plugin types of Rewire's own binaries in the CNI bin
// dir: "rewire", the plugin the runtime executes (the type of the conflist
// `rewired install` writes, rewire-cni-network), "rewire-plugin", the Go
// plugin it runs for what it leaves, and "rewire-offline", rewired's copy
// the plugin runs for a DEL while no daemon listens. A network must never
// delegate to any of them, as plugin or as IPAM: rewired
// would call itself for the same container, the nested request would wait
// on the sandbox lock the outer one holds, and the no-daemon DEL would run
// itself again one level deeper each time. Every config is refused with them
// (checkPluginTypes), and GuardExec refuses to run them.
var SelfTypes = []string{"rewire", "rewire-plugin", "rewire-offline"}

// ErrSelfDelegation is wrapped by every refusal to delegate to Rewire itself.
var ErrSelfDelegation = errors.New("a network must not delegate to Rewire itself")

// checkSelf refuses a plugin or IPAM type that is one of Rewire's own.
func checkSelf(pluginType string) error {
	if slices.Contains(SelfTypes, pluginType) {
		return fmt.Errorf("%q is Rewire's own plugin: %w (Rewire would call itself for the same container)",
			pluginType, ErrSelfDelegation)
	}
	return nil
}

// GuardExec wraps a plugin exec so that it never finds or runs Rewire's own
// binaries, whatever config asks for them: a delegate config recorded by an
// older version, or an IPAM type only the delegate plugin would execute
// (seen in the config each plugin gets on stdin). The refusal is an error
// of the delegate call, so the attachment stays recorded and the error
// names it.
func GuardExec(exec invoke.Exec) invoke.Exec { return guardExec{exec} }

type guardExec struct{ invoke.Exec }

func (g guardExec) FindInPath(plugin string, paths []string) (string, error) {
	if err := checkSelf(plugin); err != nil {
		return "", fmt.Errorf("plugin type %w", err)
	}
	return g.Exec.FindInPath(plugin, paths)
}

func (g guardExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	if err := checkSelf(filepath.Base(pluginPath)); err != nil {
		return nil, fmt.Errorf("plugin %s: %w", pluginPath, err)
	}
	if !mayNameSelf(stdin) {
		return g.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
	}
	var conf struct {
		Type string `json:"type"`
		IPAM struct {
			Type string `json:"type"`
		} `json:"ipam"`
	}
	if json.Unmarshal(stdin, &conf) == nil {
		if err := checkSelf(conf.Type); err != nil {
			return nil, fmt.Errorf("plugin type %w", err)
		}
		if err := checkSelf(conf.IPAM.Type); err != nil {
			return nil, fmt.Errorf("ipam type %w", err)
		}
	}
	return g.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
}

// mayNameSelf reports whether a JSON config may hold one of SelfTypes as a
// string: each contains "rewire", which JSON can only hide in a \u escape.
func mayNameSelf(conf []byte) bool {
	return bytes.Contains(conf, []byte("rewire")) || bytes.Contains(conf, []byte(`\u`))
}
