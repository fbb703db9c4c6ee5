package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// A writer store (New, with a journal) writes record files behind its
// callers: a write goes to the journal at once (synced when durable) and
// its file is written by a goroutine after it, so that no file system
// metadata work (a temp file, a rename) is on an ADD's path. Until its
// file is in place a record is served from memory (pending); a crash
// meanwhile loses nothing, the journal's replay writes the file. Removals
// stay in place (a removed record never comes back from a write behind).
// Readers in other processes (inspect) see a file once it is written.
type behind struct {
	wmu     sync.Mutex // held by every write and removal of a record file
	mu      sync.Mutex // pending
	pending map[string]entry
	writers sync.WaitGroup
	hold    bool // tests: write no file (a crash before they were written)
}

// put makes e id's pending state unless a newer one is pending.
func (b *behind) put(e entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[string]entry{}
	}
	if cur, ok := b.pending[e.ID]; !ok || cur.Seq < e.Seq {
		b.pending[e.ID] = e
	}
}

// get returns id's pending state.
func (b *behind) get(id string) (entry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.pending[id]
	return e, ok
}

// drop forgets id's pending state (b.wmu held) and reports whether there
// was one.
func (b *behind) drop(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.pending[id]
	delete(b.pending, id)
	return ok
}

// snapshot returns every pending state.
func (b *behind) snapshot() []entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]entry, 0, len(b.pending))
	for _, e := range b.pending {
		out = append(out, e)
	}
	return out
}

// writeBehind starts writing id's pending record to its file.
func (s *Store) writeBehind(id string) {
	s.behind.writers.Add(1)
	go func() {
		defer s.behind.writers.Done()
		_ = s.writeFile(id)
	}()
}

// writeFile writes id's pending record to its file, if it still has one,
// and forgets it unless a newer one came meanwhile.
func (s *Store) writeFile(id string) error {
	b := &s.behind
	b.wmu.Lock()
	defer b.wmu.Unlock()
	e, ok := b.get(id)
	if !ok || b.hold {
		return nil
	}
	p, err := s.sandboxPath(id)
	if err == nil {
		err = s.writeAtomic(p, e.Record, false)
	}
	if err != nil {
		return err // still served from memory and the journal
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur := b.pending[id]; cur.Seq == e.Seq {
		delete(b.pending, id)
	}
	return nil
}

// Flush writes every record file still pending and returns once they are
// written (or why one could not be). The daemon flushes before it exits;
// a store that is not flushed loses nothing (see behind).
func (s *Store) Flush() error {
	s.behind.writers.Wait()
	var errs []error
	for _, e := range s.behind.snapshot() {
		if err := s.writeFile(e.ID); err != nil {
			errs = append(errs, fmt.Errorf("record %s: %w", e.ID, err))
		}
	}
	return errors.Join(errs...)
}

// pendingRecord decodes id's pending record (nil: none pending).
func (s *Store) pendingRecord(id string) (*Sandbox, error) {
	e, ok := s.behind.get(id)
	if !ok {
		return nil, nil
	}
	sb := &Sandbox{}
	if err := json.Unmarshal(e.Record, sb); err != nil {
		return nil, fmt.Errorf("%w %s (pending): %v", ErrCorrupt, id, err)
	}
	return sb, nil
}
