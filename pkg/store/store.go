// Package store is Rewire's on-disk record of what is attached to each pod
// sandbox. A record is written before and after every delegate call, each
// write journaled at once and its file written atomically (temp file,
// optional fsync, rename) behind the caller, so that after a crash at any
// point the next DEL, GC or restart knows exactly what to undo.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rewire-cni/rewire/pkg/fsutil"
)

// Store keeps one file per sandbox under dir/sandboxes, one file per
// distinct delegate config ever used under dir/networks (for CNI GC), and
// damaged records moved aside under dir/damaged.
//
// A store opened by New (a writer: the daemon, the no-daemon DEL) appends
// every write to its journal and writes the record's file behind the
// caller (see behind); one opened by Open (inspect) writes the file in
// place. Files are replaced atomically (temp file + rename), so a crash at
// any point leaves either the old or the new record. Against power loss:
// Commit (the write that completes an operation, before it is answered)
// and Prepare are durable, by an fdatasync of the journal shared by
// concurrent commits (group commit), or of the file and its directory in
// a store from Open. Put, the writes in between, are not synced unless the
// store is in sync mode: a power loss can only lose them together with an
// operation nobody was answered for. Delete is not synced unless in sync
// mode (see Delete).
// Network configs are always fsynced.
type Store struct {
	dir     string
	sync    bool
	held    heldIndex
	dirSync groupSync
	journal *journal // nil: durable writes fsync file and directory
	behind  behind   // with a journal: record files written behind
	seq     atomic.Uint64
	// known are the networks files written or seen by this process
	// (RememberNetwork then costs no stat).
	known sync.Map
}

// CacheDir is libcni's cache in a state dir (rewired's and the no-daemon
// DEL's), and CacheJournal the journal of the cache files rewired writes
// behind (writebehind), outside the cache.
func CacheDir(stateDir string) string { return filepath.Join(stateDir, "cache") }

func CacheJournal(stateDir string) string { return filepath.Join(stateDir, "cache.journal") }

// ErrCorrupt wraps a record that exists but cannot be decoded.
var ErrCorrupt = errors.New("corrupt store record")

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$`)

// New opens (creating) a store in dir for its one writer (the daemon, or
// the no-daemon DEL holding LockDir): it removes temp files a crash left
// and replays the journal over the records. With sync, every write is
// durable.
func New(dir string, sync bool) (*Store, error) {
	st, err := Open(dir, sync)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"sandboxes", "networks", "damaged"} {
		// Temp files of writes a crash interrupted (never renamed into place).
		tmps, _ := filepath.Glob(filepath.Join(dir, d, ".*"))
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	if err := st.openJournal(); err != nil {
		return nil, fmt.Errorf("store journal: %w", err)
	}
	return st, nil
}

// Open opens the store without New's clean-up of interrupted writes and
// journal, for a process that may run beside the daemon (inspect).
func Open(dir string, sync bool) (*Store, error) {
	for _, d := range []string{"sandboxes", "networks", "damaged"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("creating store: %w", err)
		}
	}
	return &Store{dir: dir, sync: sync}, nil
}

func (s *Store) sandboxPath(id string) (string, error) {
	if !validID.MatchString(id) {
		return "", fmt.Errorf("invalid container ID %q", id)
	}
	return filepath.Join(s.dir, "sandboxes", id+".json"), nil
}

// Get loads a sandbox record. It returns (nil, nil) when there is none and
// an error wrapping ErrCorrupt when the file cannot be decoded.
func (s *Store) Get(id string) (*Sandbox, error) {
	p, err := s.sandboxPath(id)
	if err != nil {
		return nil, err
	}
	if sb, pending, err := s.pendingRecord(id); pending {
		return sb, err
	}
	raw, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading record %s: %w", id, err)
	}
	sb := &Sandbox{}
	if err := json.Unmarshal(raw, sb); err != nil || sb.ContainerID != id {
		return nil, fmt.Errorf("%w %s: %v", ErrCorrupt, p, err)
	}
	return sb, nil
}

// Put writes a sandbox record atomically (durably only in sync mode).
func (s *Store) Put(sb *Sandbox) error { return s.put(sb, s.sync) }

// Commit writes a sandbox record atomically and durably: it survives a
// power loss once Commit returns. Call it before an operation is answered.
func (s *Store) Commit(sb *Sandbox) error { return s.put(sb, true) }

// Prepare writes a record as Commit does, but returns before it is
// durable: wait returns once it is (or why it could not be). An ADD
// prepares the record that names all its attachments before its delegates
// run, so that their run hides the sync.
func (s *Store) Prepare(sb *Sandbox) (wait func() error, err error) {
	return s.write(sb, true)
}

func (s *Store) put(sb *Sandbox, durable bool) error {
	wait, err := s.write(sb, durable)
	if err != nil {
		return err
	}
	return wait()
}

// write writes sb's record: to the journal and its file behind (a writer
// store), or to its file atomically. When durable, wait returns once it is
// durable (its journal entry synced, or the file and its directory).
func (s *Store) write(sb *Sandbox, durable bool) (wait func() error, err error) {
	p, err := s.sandboxPath(sb.ContainerID)
	if err != nil {
		return nil, err
	}
	sb.Seq = s.seq.Add(1)
	raw, err := json.Marshal(sb)
	if err != nil {
		return nil, fmt.Errorf("encoding record %s: %w", sb.ContainerID, err)
	}
	noWait := func() error { return nil }
	if s.journal == nil {
		if err := s.writeAtomic(p, raw, durable); err != nil {
			return nil, err
		}
		s.noteHeld(sb.ContainerID, sb, false)
		return noWait, nil
	}
	e := entry{Seq: sb.Seq, ID: sb.ContainerID, Record: raw}
	s.behind.put(e) // first: a compaction from now on includes it
	s.noteHeld(sb.ContainerID, sb, false)
	synced := noWait
	if durable {
		synced = s.journal.append(e)
	} else if _, err := s.journal.write(e); err != nil {
		return nil, fmt.Errorf("recording %s: %w", sb.ContainerID, err)
	}
	s.writeBehind(sb.ContainerID)
	return func() error {
		if err := synced(); err != nil {
			return fmt.Errorf("committing record %s: %w", sb.ContainerID, err)
		}
		return nil
	}, nil
}

// Track makes the held-address index know sb's results without writing
// the record (an ADD writes its results with the completed record).
func (s *Store) Track(sb *Sandbox) { s.noteHeld(sb.ContainerID, sb, true) }

// Delete removes a sandbox record; a missing record is not an error. The
// removal is journaled but not synced: it survives a crash of the process,
// not necessarily a power loss, after which the record comes back like
// that of every sandbox the power loss ended, and is released the same
// way (its delegates' DELs run again: they are idempotent). In sync mode
// it is durable. In a writer store the file goes behind the caller, as
// writes do.
func (s *Store) Delete(id string) error {
	p, err := s.sandboxPath(id)
	if err != nil {
		return err
	}
	if s.journal == nil {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing record %s: %w", id, err) // still holds its addresses
		}
		s.noteHeld(id, nil, false)
		if s.sync {
			return s.syncDir(filepath.Dir(p))
		}
		return nil
	}
	if e, ok := s.behind.get(id); !ok || e.Record == nil {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) || ok {
			// Nothing to remove; an earlier Delete journaled its own removal.
			s.noteHeld(id, nil, false)
			return nil
		}
	}
	e := entry{Seq: s.seq.Add(1), ID: id}
	s.behind.put(e) // first: a compaction from now on leaves the record out
	s.noteHeld(id, nil, false)
	if s.sync {
		err = s.journal.append(e)()
	} else {
		_, err = s.journal.write(e)
	}
	if err != nil {
		return fmt.Errorf("journaling the removal of record %s: %w", id, err)
	}
	s.writeBehind(id)
	return nil
}

// removed makes the removal of id's record from sandboxes durable.
func (s *Store) removed(id string) error {
	if s.journal == nil {
		return s.syncDir(filepath.Join(s.dir, "sandboxes"))
	}
	if err := s.journal.append(entry{Seq: s.seq.Add(1), ID: id})(); err != nil {
		return fmt.Errorf("committing the removal of record %s: %w", id, err)
	}
	return nil
}

// Damaged counts the records moved aside as damaged.
func (s *Store) Damaged() (int, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "damaged"))
	return len(entries), err
}

// Quarantine moves a damaged record to dir/damaged (kept for inspection, no
// longer a live record).
func (s *Store) Quarantine(id string) error {
	p, err := s.sandboxPath(id)
	if err != nil {
		return err
	}
	s.behind.wmu.Lock()
	s.behind.drop(id)
	err = os.Rename(p, filepath.Join(s.dir, "damaged", filepath.Base(p)))
	s.behind.wmu.Unlock()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("quarantining record %s: %w", id, err)
	}
	s.noteHeld(id, nil, false)
	return errors.Join(s.removed(id), s.syncDir(filepath.Join(s.dir, "damaged")))
}

// IDs lists the container IDs that have a record (decodable or not).
func (s *Store) IDs() ([]string, error) {
	// Pending first: a record whose file is written meanwhile is then in
	// the directory.
	pending := s.behind.snapshot()
	entries, err := os.ReadDir(filepath.Join(s.dir, "sandboxes"))
	if err != nil {
		return nil, fmt.Errorf("listing store: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasPrefix(id, ".") {
			ids = append(ids, id)
		}
	}
	removed := map[string]bool{}
	for _, e := range pending {
		if e.Record == nil {
			removed[e.ID] = true
		} else {
			ids = append(ids, e.ID)
		}
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return removed[id] })
	sort.Strings(ids)
	return slices.Compact(ids), nil
}

func (s *Store) writeAtomic(path string, data []byte, sync bool) error {
	err := fsutil.WriteAtomic(path, 0o600, bytes.NewReader(data), sync)
	if err == nil && sync {
		err = s.syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("store write %s: %w", path, err)
	}
	return nil
}

// syncDir makes the renames and removals done in dir so far durable. The
// sandboxes directory's fsyncs are shared by concurrent callers.
func (s *Store) syncDir(dir string) error {
	if dir == filepath.Join(s.dir, "sandboxes") {
		return s.dirSync.do(func() error { return fsyncDir(dir) })
	}
	return fsyncDir(dir)
}

func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
