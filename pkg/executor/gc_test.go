package executor

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/store"
)

// fakeCNI stands in for libcni where a test needs to hold a delegate call
// (a real plugin cannot be paused at will); the calls it does not override
// panic.
type fakeCNI struct {
	libcni.CNI
	mu     sync.Mutex
	events []string
	gcHeld chan struct{} // closed to let GC return
	inGC   chan struct{} // closed when GC started
}

func (f *fakeCNI) note(ev string) { f.mu.Lock(); f.events = append(f.events, ev); f.mu.Unlock() }

func (f *fakeCNI) GCNetworkList(context.Context, *libcni.NetworkConfigList, *libcni.GCArgs) error {
	close(f.inGC)
	<-f.gcHeld
	f.note("gc-end")
	return nil
}

func (f *fakeCNI) AddNetworkList(context.Context, *libcni.NetworkConfigList, *libcni.RuntimeConf) (types.Result, error) {
	f.note("add-start")
	return &current.Result{CNIVersion: "1.1.0"}, nil
}

// A hot-plug whose record is written after GC took its snapshot of valid
// attachments must not create its lease until that GC is over: GC would
// take the new lease for a stale one.
func TestGCAndAddDoNotOverlap(t *testing.T) {
	st := newStore(t)
	conf := []byte(`{"cniVersion":"1.1.0","name":"n1","plugins":[{"type":"bridge"}]}`)
	must(t, st.RememberNetwork(conf))
	sb := &store.Sandbox{ContainerID: "c1", NetNS: "/proc/self/ns/net", Complete: true}
	must(t, st.Commit(sb))
	f := &fakeCNI{gcHeld: make(chan struct{}), inGC: make(chan struct{})}
	e := New(f, st, slog.New(slog.NewTextHandler(io.Discard, nil)))

	gcDone := make(chan error)
	go func() {
		gcDone <- e.GC(context.Background(), []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}})
	}()
	<-f.inGC // GC has its snapshot and runs
	plugged := make(chan error)
	go func() {
		_, err := e.Plug(context.Background(), sb, attachment.Spec{Network: "n1", IfName: "net1", Config: json.RawMessage(conf)})
		plugged <- err
	}()
	// The plug is recorded (it is past its snapshot point) while GC runs.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		rec, err := st.Get("c1")
		must(t, err)
		if rec.Find("net1") != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the plug was never recorded")
		}
	}
	time.Sleep(20 * time.Millisecond) // room for an ADD that does not wait
	close(f.gcHeld)
	must(t, <-gcDone)
	must(t, <-plugged)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events) != 2 || f.events[0] != "gc-end" {
		t.Fatalf("events %v: the delegate ADD ran while GC held its snapshot", f.events)
	}
}
