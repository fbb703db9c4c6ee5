package executor

import (
	"context"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
)

// spinExec is a plugin exec that keeps rewired's own process busy on a CPU
// for d (as forking and reading a delegate does, at far smaller scale).
type spinExec struct {
	invoke.Exec
	d time.Duration
}

func (s spinExec) ExecPlugin(context.Context, string, []byte, []string) ([]byte, error) {
	spinCPU(s.d)
	return []byte("{}"), nil
}

// spinCPU uses d of this process's CPU time (not wall time: a busy machine
// only makes it take longer).
func spinCPU(d time.Duration) {
	for end := processCPU() + d; processCPU() < end; {
	}
}

// A request's own CPU time counts what the process used outside its
// delegates' executions, and nothing it used during them.
func TestBusyOwnCPU(t *testing.T) {
	const outside, inside = 30 * time.Millisecond, 60 * time.Millisecond
	ctx, busy := WithBusy(context.Background())
	spinCPU(outside / 2)
	if _, err := Timed(spinExec{d: inside}).ExecPlugin(ctx, "/opt/cni/bin/bridge", nil, []string{"CNI_COMMAND=ADD"}); err != nil {
		t.Fatal(err)
	}
	spinCPU(outside / 2)
	// The test process's other threads (the garbage collector) may add a
	// little; the delegate's 60 ms must not be in it.
	if got := busy.OwnCPU(); got < outside || got >= outside+inside/2 {
		t.Errorf("own CPU %v, want %v (and not the %v used during the delegate)", got, outside, inside)
	}
}
