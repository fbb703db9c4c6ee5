package executor

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/rewire-cni/rewire/pkg/metrics"
)

// Timed wraps a plugin exec so that every delegate execution is observed in
// rewire_delegate_duration_seconds by plugin type and CNI command.
func Timed(exec invoke.Exec) invoke.Exec { return timedExec{exec} }

type timedExec struct{ invoke.Exec }

func (t timedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	command := "VERSION"
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			command = v
		}
	}
	start := time.Now()
	out, err := t.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
	metrics.DelegateSeconds.Observe(time.Since(start).Seconds(), filepath.Base(pluginPath), command)
	return out, err
}
