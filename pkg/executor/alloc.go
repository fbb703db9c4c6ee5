package executor

import (
	"sync"

	"github.com/rewire-cni/rewire/pkg/memo"
	"github.com/rewire-cni/rewire/pkg/reservation"
)

// Allocation classes (allocLocks).
const (
	freshAlloc   = iota // the IPAM picks the address
	requestAlloc        // the IPAM is asked for given addresses
)

// allocLocks keeps, per IPAM store on this node, the ADDs whose IPAM picks
// an address apart from those that ask for given ones: with two
// independent stores on one range (during a migration), a fresh ADD can be
// handed an address a pod holds in the other store, which it gives back
// (addStepping); an ADD asking for that address meanwhile would be refused.
// ADDs of one class run together; a waiting class stops new ones of the
// other from joining.
type allocLocks struct {
	mu    sync.Mutex
	cond  *sync.Cond
	state map[string]*allocState
}

type allocState struct {
	class, holders int
	waiting        [2]int
}

// lock takes the store key's lock for class ("" : no store, no lock).
func (l *allocLocks) lock(key string, class int) (unlock func()) {
	if key == "" {
		return func() {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond == nil {
		l.cond, l.state = sync.NewCond(&l.mu), map[string]*allocState{}
	}
	s := l.state[key]
	if s == nil {
		s = &allocState{}
		l.state[key] = s
	}
	for s.holders > 0 && (s.class != class || s.waiting[1-class] > 0) {
		s.waiting[class]++
		l.cond.Wait()
		s.waiting[class]--
	}
	s.class = class
	s.holders++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if s.holders--; s.holders == 0 {
			if s.waiting == [2]int{} {
				delete(l.state, key)
			}
			l.cond.Broadcast()
		}
	}
}

// storeKeys memoizes reservation.Key of delegate configs (the ADD path).
var storeKeys = memo.Bounded[string]{Max: 256}

func storeKey(conf []byte) string {
	if k, ok := storeKeys.Get(conf); ok {
		return k
	}
	k := reservation.Key(conf)
	storeKeys.Put(conf, k)
	return k
}
