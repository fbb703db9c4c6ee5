// Package fault is the daemon's fault injection, for tests only: enabled by
// the explicit --test-faults flag, it kills the daemon (SIGKILL, a crash) or
// fails the operation at named steps of ADD, DEL, hot-plug and unplug.
package fault

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
)

// Actions.
const (
	Kill = "kill"
	Fail = "fail"
)

// Injector maps step names to actions; each fires once.
type Injector struct {
	mu    sync.Mutex
	steps map[string]string
}

// Parse reads "step=action,step=action" (action kill or fail).
func Parse(spec string) (*Injector, error) {
	in := &Injector{steps: map[string]string{}}
	for _, item := range strings.Split(spec, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		step, action, ok := strings.Cut(item, "=")
		if !ok || (action != Kill && action != Fail) {
			return nil, fmt.Errorf("fault %q: want STEP=kill or STEP=fail", item)
		}
		in.steps[step] = action
	}
	return in, nil
}

// At is called at every named step: it kills the process, returns an
// error, or does nothing.
func (in *Injector) At(step string) error {
	in.mu.Lock()
	action := in.steps[step]
	delete(in.steps, step)
	in.mu.Unlock()
	switch action {
	case Kill:
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns: the signal is fatal
	case Fail:
		return fmt.Errorf("injected fault at %s", step)
	}
	return nil
}
