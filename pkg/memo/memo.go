// Package memo keeps values computed from byte strings (parsed configs),
// a bounded number of them, for concurrent use.
package memo

import "sync"

// Bounded maps keys to values, at most Max of them: when full it is
// emptied (the keys in use are few; an unbounded map would grow with
// per-pod keys such as a device ID). The zero value is empty with Max 0:
// every Put empties it first.
type Bounded[V any] struct {
	Max int
	mu  sync.Mutex
	m   map[string]V
}

// Get returns the value kept for key.
func (b *Bounded[V]) Get(key []byte) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[string(key)]
	return v, ok
}

// Put keeps v for key.
func (b *Bounded[V]) Put(key []byte, v V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil || len(b.m) >= b.Max {
		b.m = map[string]V{}
	}
	b.m[string(key)] = v
}

// Len is how many values are kept.
func (b *Bounded[V]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}
