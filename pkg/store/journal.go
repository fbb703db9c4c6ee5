package store

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// The journal makes a record durable with one small write and one
// fdatasync instead of fsyncing the record's file and its directory. The
// record files stay what other processes read (written atomically, not
// synced, behind the writes); the journal holds every write and removal
// of a record, synced when it must be durable, and is replayed over the
// files when a writer opens the store (after a crash, a file may not be
// written yet; after a power loss, the files may be missing, older or
// torn).
//
// The journal is a preallocated, zero-filled file of entries, each a
// little-endian length and CRC-32C of its payload, then the payload: the
// sequence number (8 bytes), the container ID's length (2 bytes), the ID
// and the record's JSON (none: removed). A zero length or a bad checksum
// ends it (a torn tail was never answered). Each entry carries
// the record's sequence number: replay only restores a record over a file
// older than it, so a later unsynced write a crash kept is not undone.
// When the journal is full it is rewritten (compacted) as one entry per
// live record.

// JournalSize is the size a journal is preallocated with (it is larger
// when the live records need more).
var JournalSize int64 = 4 << 20

const (
	journalHeader = 8  // length, checksum
	entryHeader   = 10 // sequence number, ID length
	maxEntry      = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// entry is one journal entry: a record's durable state, or its removal.
type entry struct {
	Seq    uint64
	ID     string
	Record []byte // none: removed
}

type journal struct {
	path string
	mu   sync.Mutex // appends and rotation
	f    *os.File
	old  *os.File // the previous file, closed at the next rotation (a sync may still use it)
	off  int64
	size int64
	sync groupSync
	// syncing, when set, is called before each fdatasync (tests).
	syncing func()
	// live makes the record files' names durable and returns their
	// entries, for a compaction (called with mu held).
	live func() ([]entry, error)
}

// append writes e and starts making it durable; synced returns once it is.
// Concurrent appends share one fdatasync (group commit).
func (j *journal) append(e entry) (synced func() error) {
	rotated, err := j.write(e)
	if err != nil || rotated {
		return func() error { return err }
	}
	done := make(chan error, 1)
	go func() {
		done <- j.sync.do(func() error {
			j.mu.Lock()
			f := j.f
			j.mu.Unlock()
			if j.syncing != nil {
				j.syncing()
			}
			return fdatasync(f)
		})
	}()
	return sync.OnceValue(func() error { return <-done })
}

// write writes e without syncing it: it survives a crash of the process,
// and a power loss once the next append's sync (or the kernel's writeback)
// has run. rotated reports a compaction, which made every live record
// durable, e's state included (its file was written or removed first).
func (j *journal) write(e entry) (rotated bool, err error) {
	buf := encodeEntry(e)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.off+int64(len(buf)) > j.size {
		return true, j.rotate()
	}
	if _, err := j.f.WriteAt(buf, j.off); err != nil {
		return false, fmt.Errorf("journal write: %w", err)
	}
	j.off += int64(len(buf))
	return false, nil
}

func encodeEntry(e entry) []byte {
	n := entryHeader + len(e.ID) + len(e.Record)
	buf := make([]byte, journalHeader+n)
	payload := buf[journalHeader:]
	binary.LittleEndian.PutUint64(payload, e.Seq)
	binary.LittleEndian.PutUint16(payload[8:], uint16(len(e.ID)))
	copy(payload[entryHeader:], e.ID)
	copy(payload[entryHeader+len(e.ID):], e.Record)
	binary.LittleEndian.PutUint32(buf, uint32(n))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(payload, crcTable))
	return buf
}

// decodeEntry decodes a payload whose checksum matched.
func decodeEntry(p []byte) (entry, bool) {
	if len(p) < entryHeader {
		return entry{}, false
	}
	n := int(binary.LittleEndian.Uint16(p[8:]))
	if len(p) < entryHeader+n {
		return entry{}, false
	}
	e := entry{Seq: binary.LittleEndian.Uint64(p), ID: string(p[entryHeader : entryHeader+n])}
	if rec := p[entryHeader+n:]; len(rec) > 0 {
		e.Record = rec
	}
	return e, true
}

// rotate replaces the journal (j.mu held) with a new one holding one entry
// per live record, made durable before it takes the old one's place.
func (j *journal) rotate() error {
	live, err := j.live()
	if err != nil {
		return fmt.Errorf("journal compaction: %w", err)
	}
	var data []byte
	for _, e := range live {
		data = append(data, encodeEntry(e)...)
	}
	size := max(JournalSize, 2*int64(len(data)))
	f, err := writeJournal(j.path, data, size)
	if err != nil {
		return fmt.Errorf("journal compaction: %w", err)
	}
	if j.old != nil {
		j.old.Close()
	}
	j.old, j.f, j.off, j.size = j.f, f, int64(len(data)), size
	return nil
}

// writeJournal writes a new journal file holding data, zero-filled to size
// (so that later writes need no allocation and fdatasync flushes only
// them), durably in place of path, and returns it open.
func writeJournal(path string, data []byte, size int64) (*os.File, error) {
	tmp := filepath.Join(filepath.Dir(path), ".journal.tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(data)
	zeros := make([]byte, 64<<10) // written in pieces: no journal-sized buffer stays in the heap
	for left := size - int64(len(data)); err == nil && left > 0; left -= int64(len(zeros)) {
		_, err = f.Write(zeros[:min(left, int64(len(zeros)))])
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = fsyncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readJournal returns the last entry of every record in the journal at
// path (none when there is no journal).
func readJournal(path string) (map[string]entry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	last := map[string]entry{}
	head := make([]byte, journalHeader)
	for {
		if _, err := io.ReadFull(r, head); err != nil {
			break // the end of the file
		}
		n := int(binary.LittleEndian.Uint32(head))
		if n == 0 || n > maxEntry {
			break // the zeros after the last entry, or a torn header
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			break
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(head[4:]) {
			break // a torn write: it and what follows were never synced
		}
		e, ok := decodeEntry(payload)
		if !ok {
			break
		}
		if prev, ok := last[e.ID]; !ok || e.Seq > prev.Seq {
			last[e.ID] = e
		}
	}
	return last, nil
}

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// openJournal replays the journal over the record files and starts a new
// one holding the live records.
func (s *Store) openJournal() error {
	path := filepath.Join(s.dir, "journal")
	last, err := readJournal(path)
	if err != nil {
		return err
	}
	for id, e := range last {
		s.bumpSeq(e.Seq)
		if err := s.replay(id, e); err != nil {
			return err
		}
	}
	s.journal = &journal{path: path, live: s.liveEntries}
	s.journal.mu.Lock()
	defer s.journal.mu.Unlock()
	return s.journal.rotate()
}

// replay makes id's record file what its last journal entry says, unless
// the file is newer (a later unsynced write that survived).
func (s *Store) replay(id string, e entry) error {
	p, err := s.sandboxPath(id)
	if err != nil {
		return nil // not a record name: never written by this store
	}
	_, seq, err := readHead(p)
	ok := err == nil
	switch {
	case ok && seq >= e.Seq:
		return nil
	case e.Record == nil:
		if ok { // a removal the power loss undid
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("replaying the removal of record %s: %w", id, err)
			}
		}
		return nil // a damaged file is left to the next reader to quarantine
	default: // missing, damaged or older: the write the power loss lost
		// Durable through the new journal this replay ends with.
		return s.writeAtomic(p, e.Record, false)
	}
}

// readHead reads the record file at p and its sequence number; an error
// when it is missing, cannot be decoded or names another container.
func readHead(p string) (raw []byte, seq uint64, err error) {
	raw, err = os.ReadFile(p)
	if err != nil {
		return nil, 0, err
	}
	var h struct {
		Seq         uint64 `json:"seq"`
		ContainerID string `json:"containerID"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, 0, err
	}
	if h.ContainerID+".json" != filepath.Base(p) {
		return nil, 0, fmt.Errorf("record %s names container %q", p, h.ContainerID)
	}
	return raw, h.Seq, nil
}

// liveEntries makes the names in sandboxes durable (every rename and
// removal so far) and returns one entry per live record: its pending
// state, or its decodable file. No record file changes meanwhile.
func (s *Store) liveEntries() ([]entry, error) {
	s.behind.wmu.Lock()
	defer s.behind.wmu.Unlock()
	if err := fsyncDir(filepath.Join(s.dir, "sandboxes")); err != nil {
		return nil, err
	}
	ids, err := s.IDs()
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, id := range ids {
		if e, ok := s.behind.get(id); ok { // IDs left out pending removals
			out = append(out, e)
			continue
		}
		p, _ := s.sandboxPath(id)
		raw, seq, err := readHead(p)
		if err != nil {
			continue // removed meanwhile, or damaged: quarantined by its next reader
		}
		s.bumpSeq(seq)
		out = append(out, entry{Seq: seq, ID: id, Record: raw})
	}
	return out, nil
}

// bumpSeq makes the next sequence number larger than v.
func (s *Store) bumpSeq(v uint64) {
	for {
		cur := s.seq.Load()
		if cur >= v || s.seq.CompareAndSwap(cur, v) {
			return
		}
	}
}
