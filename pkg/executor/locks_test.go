package executor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/rewire-cni/rewire/pkg/store"
)

// withLockTimeout lowers LockTimeout for one test.
func withLockTimeout(t *testing.T, d time.Duration) {
	old := LockTimeout
	LockTimeout = d
	t.Cleanup(func() { LockTimeout = old })
}

// A CNI request waiting on a sandbox that another operation holds gives up
// after LockTimeout with "try again later" (code 11) instead of waiting
// forever; the holder is not disturbed and other sandboxes are not blocked.
func TestRequestsGiveUpOnAHeldSandbox(t *testing.T) {
	withLockTimeout(t, 50*time.Millisecond)
	st := newStore(t)
	cni := libcni.NewCNIConfigWithCacheDir(nil, t.TempDir(), nil) // no plugins: none is needed
	e := New(cni, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	unlock := e.Lock("held") // e.g. an ADD whose delegate calls back into Rewire
	defer func() { unlock() }()
	requests := []struct {
		name string
		run  func() error
	}{
		{"ADD", func() error {
			_, err := e.Add(context.Background(), &store.Sandbox{ContainerID: "held"}, nil)
			return err
		}},
		{"DEL", func() error { return e.Del(context.Background(), "held", "", nil) }},
		{"CHECK", func() error { return e.Check(context.Background(), "held", "", nil) }},
	}
	for _, r := range requests {
		t.Run(r.name, func(t *testing.T) {
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- r.run() }()
			select {
			case err := <-done:
				var te *types.Error
				if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "sandbox held is busy") {
					t.Fatalf("error = %#v, want code 11 naming the sandbox", err)
				}
				if waited := time.Since(start); waited < LockTimeout {
					t.Errorf("gave up after %s, before LockTimeout", waited)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the request is still waiting for the sandbox lock")
			}
		})
	}
	// Another sandbox is not held up, and the held one is free once released.
	if err := e.Check(context.Background(), "other", "", nil); !errors.Is(err, ErrNoRecord) {
		t.Errorf("CHECK of another sandbox: %v", err)
	}
	unlock()
	unlock = func() {}
	if err := e.Check(context.Background(), "held", "", nil); !errors.Is(err, ErrNoRecord) {
		t.Errorf("CHECK after release: %v", err)
	}
}

// LockContext ends with its context too; a waiter that gave up leaves no
// trace, and Lock (the reconciler's) still waits as long as it takes.
func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	unlock := k.lock("a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.lockContext(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lockContext on a held key: %v", err)
	}
	got := make(chan struct{})
	go func() {
		k.lock("a")()
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("lock did not wait for the holder")
	case <-time.After(20 * time.Millisecond):
	}
	unlock()
	<-got
	second, err := k.lockContext(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	second()
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a second unlock must panic, as sync.Mutex does, not block")
			}
		}()
		second()
	}()
	if len(k.m) != 0 {
		t.Errorf("unused mutexes kept: %v", k.m)
	}
}

// newStore opens a writer store in a temporary directory and has its
// record files written (Flush) before the directory is removed.
func newStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.New(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Flush() })
	return st
}
