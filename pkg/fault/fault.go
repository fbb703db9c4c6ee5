// Package fault is the daemon's fault injection, for tests only: enabled by
// the explicit --test-faults flag, it kills the daemon (SIGKILL, a crash),
// fails the operation or holds it for a while at named steps of ADD, DEL,
// hot-plug and unplug.
package fault

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Actions; Delay is followed by a duration ("delay:2s").
const (
	Kill  = "kill"
	Fail  = "fail"
	Delay = "delay"
)

// Injector maps step names to actions; each fires once.
type Injector struct {
	mu    sync.Mutex
	steps map[string]string
}

// Parse reads "step=action,step=action" (action kill, fail or delay:DURATION).
func Parse(spec string) (*Injector, error) {
	in := &Injector{steps: map[string]string{}}
	for _, item := range strings.Split(spec, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		step, action, ok := strings.Cut(item, "=")
		if !ok || !valid(action) {
			return nil, fmt.Errorf("fault %q: want STEP=kill, STEP=fail or STEP=delay:DURATION", item)
		}
		in.steps[step] = action
	}
	return in, nil
}

func valid(action string) bool {
	if d, ok := strings.CutPrefix(action, Delay+":"); ok {
		_, err := time.ParseDuration(d)
		return err == nil
	}
	return action == Kill || action == Fail
}

// At is called at every named step: it kills the process, returns an
// error, sleeps (holding whatever the step holds, such as the sandbox's
// lock: tests use it to make a race happen), or does nothing.
func (in *Injector) At(step string) error {
	in.mu.Lock()
	action := in.steps[step]
	delete(in.steps, step)
	in.mu.Unlock()
	if d, ok := strings.CutPrefix(action, Delay+":"); ok {
		dur, _ := time.ParseDuration(d) // checked by Parse
		time.Sleep(dur)
		return nil
	}
	switch action {
	case Kill:
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns: the signal is fatal
	case Fail:
		return fmt.Errorf("injected fault at %s", step)
	}
	return nil
}
