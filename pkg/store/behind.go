package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rewire-cni/rewire/pkg/writebehind"
)

// A writer store (New, with a journal) writes and removes record files
// behind its callers: a write or removal goes to the journal at once
// (synced when durable) and a goroutine brings the file in line after
// it, so that no file system metadata work (a temp file, a rename, an
// unlink) is on a request's path. Until then the record's state is served
// from memory (pending; a removal is pending as an entry without a
// record); a crash meanwhile loses nothing, the journal's replay brings
// the file in line. Readers in other processes (inspect) see a file once
// it is written or removed.
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

// drop forgets id's pending state (b.wmu held).
func (b *behind) drop(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pending, id)
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

// writeBehind has id's pending record written to its file shortly (as
// writebehind does libcni's cache files, after writebehind.Delay).
func (s *Store) writeBehind(id string) {
	s.behind.writers.Add(1)
	time.AfterFunc(writebehind.Delay, func() {
		defer s.behind.writers.Done()
		_ = s.writeFile(id)
	})
}

// writeFile writes id's pending record to its file (or removes the file
// for a pending removal), if it still has one, and forgets it unless a
// newer one came meanwhile.
func (s *Store) writeFile(id string) error {
	b := &s.behind
	b.wmu.Lock()
	defer b.wmu.Unlock()
	e, ok := b.get(id)
	if !ok || b.hold {
		return nil
	}
	p, err := s.sandboxPath(id)
	switch {
	case err != nil:
	case e.Record == nil:
		if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	default:
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

// pendingRecord decodes id's pending record (pending false: none; sb nil:
// a pending removal).
func (s *Store) pendingRecord(id string) (sb *Sandbox, pending bool, err error) {
	e, ok := s.behind.get(id)
	if !ok || e.Record == nil {
		return nil, ok, nil
	}
	sb = &Sandbox{}
	if err := json.Unmarshal(e.Record, sb); err != nil {
		return nil, true, fmt.Errorf("%w %s (pending): %v", ErrCorrupt, id, err)
	}
	return sb, true, nil
}
