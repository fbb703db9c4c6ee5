package executor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// LockTimeout bounds how long a CNI request (ADD, DEL, CHECK) waits for a
// sandbox that another operation holds; it then answers "try again later"
// (code 11) and the runtime retries. Nothing legitimate holds a sandbox that
// long (a delegate call is bounded by DelegateTimeout, but a runtime does
// not wait for one that long either); without a bound, requests that can
// never get the lock (a delegate that calls back into Rewire for the same
// container) would pile up forever. Tests lower it.
var LockTimeout = 2 * time.Minute

// keyedMutex is a set of mutexes created on demand and dropped when unused.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*refMutex
}

// refMutex is a mutex that a waiter may give up on: holding it is holding
// the one token of ch.
type refMutex struct {
	ch   chan struct{}
	refs int
}

// lock waits as long as it takes.
func (k *keyedMutex) lock(key string) func() {
	unlock, _ := k.lockContext(context.Background(), key)
	return unlock
}

// lockContext waits until the lock is held or ctx ends, whichever is first.
func (k *keyedMutex) lockContext(ctx context.Context, key string) (func(), error) {
	l := k.ref(key)
	select {
	case l.ch <- struct{}{}:
	case <-ctx.Done():
		k.unref(key, l)
		return nil, ctx.Err()
	}
	return func() {
		select {
		case <-l.ch:
		default:
			panic("executor: unlock of an unlocked sandbox lock " + key)
		}
		k.unref(key, l)
	}, nil
}

// ref returns the key's mutex, creating it, and counts the caller.
func (k *keyedMutex) ref(key string) *refMutex {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]*refMutex{}
	}
	l := k.m[key]
	if l == nil {
		l = &refMutex{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	return l
}

// unref drops the caller's count and the mutex once nobody uses it.
func (k *keyedMutex) unref(key string, l *refMutex) {
	k.mu.Lock()
	if l.refs--; l.refs == 0 {
		delete(k.m, key)
	}
	k.mu.Unlock()
}

// LockContext is Lock for the CNI request paths: it gives up when ctx ends
// or after LockTimeout, returning a "try again later" CNI error (code 11)
// that names the sandbox, so that a request never waits forever on a
// sandbox another operation holds.
func (e *Executor) LockContext(ctx context.Context, containerID string) (unlock func(), err error) {
	timeout := LockTimeout
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	unlock, err = e.locks.lockContext(wctx, containerID)
	if err == nil {
		return unlock, nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("waiting for sandbox %s: %w", containerID, ctx.Err())
	}
	return nil, types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("try again later: sandbox %s is busy: another operation on it did not finish within %s", containerID, timeout), "")
}
