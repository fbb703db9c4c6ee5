// Package writebehind writes small files behind their callers. A write or
// removal is appended to a journal first (one write to an open file, not
// synced: it survives a crash of the process, as the file's own write
// would) and served from memory until a goroutine has brought the file in
// line (Delay later); then the journal is emptied. Opening the journal
// replays what a crash left in it. rewired keeps libcni's result cache this
// way: a file create per network per ADD was the largest part of its own
// time.
//
// The files are as durable as libcni makes them (not synced): after a
// power loss a file may be missing or older, as libcni's own may.
package writebehind

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Delay is how long after a write or removal its file is brought in line.
// Applying it at once runs beside the rest of the request that made it
// (on another CPU, or in its place), on a node that has few; a
// millisecond later the request has mostly been answered, and a delegate
// the runtime starts next is running instead. (An A/B run of
// BenchmarkAddOverhead, 3 secondaries, two rounds: rewired's own time per
// ADD 2.58 and 2.77 ms against 2.94 and 3.01 at once.)
const Delay = time.Millisecond

// MaxJournal bounds the journal: a write that would grow it further (the
// goroutines have fallen that far behind) writes its file at once.
var MaxJournal int64 = 16 << 20

// Files writes files behind its callers; the zero value is not usable
// (Open). Its methods are safe for concurrent use.
type Files struct {
	mu      sync.Mutex // the journal, pending
	journal *os.File
	off     int64
	seq     uint64
	pending map[string]op // path: its state not yet on disk

	wmu     sync.Mutex // held by every file write and removal
	writers sync.WaitGroup
	hold    bool // tests: write no file (a crash before they were written)
}

// op is a file's state: its content, or removed.
type op struct {
	seq    uint64
	data   []byte
	remove bool
}

// Open replays the journal at path (creating it) over the files it names
// and returns the Files that journal their writes there.
func Open(path string) (*Files, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	j, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	last, err := read(j)
	if err == nil {
		err = replay(last)
	}
	if err == nil {
		err = j.Truncate(0)
	}
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("replaying %s: %w", path, err)
	}
	return &Files{journal: j, pending: map[string]op{}}, nil
}

// Close waits for the files being written and closes the journal; a file
// not written by then is written when the journal is next opened.
func (f *Files) Close() error {
	f.writers.Wait()
	return f.journal.Close()
}

// WriteFile writes data to path (mode 0600, its directory created),
// behind the caller.
func (f *Files) WriteFile(path string, data []byte) error {
	return f.behind(path, op{data: data})
}

// Remove removes path, if it exists, behind the caller.
func (f *Files) Remove(path string) error {
	return f.behind(path, op{remove: true})
}

// behind journals o for path and starts applying it.
func (f *Files) behind(path string, o op) error {
	ok, err := f.journaled(path, o)
	if err != nil || !ok {
		return err
	}
	f.writers.Add(1)
	time.AfterFunc(Delay, func() {
		defer f.writers.Done()
		_ = f.apply(path) // left pending on failure: Flush reports it
	})
	return nil
}

// ReadFile reads path as the callers' writes and removals left it.
func (f *Files) ReadFile(path string) ([]byte, error) {
	f.mu.Lock()
	o, ok := f.pending[path]
	f.mu.Unlock()
	switch {
	case !ok:
		return os.ReadFile(path)
	case o.remove:
		return nil, &os.PathError{Op: "open", Path: path, Err: os.ErrNotExist}
	}
	return o.data, nil
}

// Flush returns once every file written so far is on disk (or why one is
// not): it writes those still pending itself.
func (f *Files) Flush() error {
	f.mu.Lock()
	var paths []string
	for p := range f.pending {
		paths = append(paths, p)
	}
	f.mu.Unlock()
	var errs []error
	for _, p := range paths {
		errs = append(errs, f.apply(p))
	}
	return errors.Join(errs...)
}

// journaled appends o for path to the journal and makes it path's pending
// state. ok false: the journal is full, o was applied at once.
func (f *Files) journaled(path string, o op) (ok bool, err error) {
	f.mu.Lock()
	f.seq++
	o.seq = f.seq
	buf := encode(path, o)
	if f.off+int64(len(buf)) > MaxJournal {
		f.pending[path] = o
		f.mu.Unlock()
		return false, f.apply(path)
	}
	defer f.mu.Unlock()
	if _, err := f.journal.WriteAt(buf, f.off); err != nil {
		return false, fmt.Errorf("journaling %s: %w", path, err)
	}
	f.off += int64(len(buf))
	f.pending[path] = o
	return true, nil
}

// apply brings path's file in line with its pending state, if it has one,
// and forgets the state unless a newer one came meanwhile; the journal is
// emptied when nothing is pending.
func (f *Files) apply(path string) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	o, ok := f.pending[path]
	f.mu.Unlock()
	if !ok || f.hold {
		return nil
	}
	if err := o.do(path); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending[path].seq == o.seq {
		delete(f.pending, path)
	}
	if len(f.pending) == 0 && f.off > 0 {
		if err := f.journal.Truncate(0); err != nil {
			return fmt.Errorf("emptying the journal: %w", err)
		}
		f.off = 0
	}
	return nil
}

func (o op) do(path string) error {
	if o.remove {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// Written in place, as libcni does: a crash in the middle leaves the
	// entry in the journal, whose replay writes the file again.
	return os.WriteFile(path, o.data, 0o600)
}

// A journal entry is a little-endian length and CRC-32C of its payload,
// then the payload: a flag (1: removal), the path's length (2 bytes), the
// path and the content. A zero length, a short entry or a bad checksum
// ends the journal (a write the crash tore).
const header = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func encode(path string, o op) []byte {
	n := 3 + len(path) + len(o.data)
	buf := make([]byte, header+n)
	p := buf[header:]
	if o.remove {
		p[0] = 1
	}
	binary.LittleEndian.PutUint16(p[1:], uint16(len(path)))
	copy(p[3:], path)
	copy(p[3+len(path):], o.data)
	binary.LittleEndian.PutUint32(buf, uint32(n))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(p, crcTable))
	return buf
}

// read returns the last state of every path in the journal.
func read(j *os.File) (map[string]op, error) {
	last := map[string]op{}
	r := bufio.NewReader(io.NewSectionReader(j, 0, 1<<62))
	head := make([]byte, header)
	for {
		if _, err := io.ReadFull(r, head); err != nil {
			return last, nil
		}
		n := binary.LittleEndian.Uint32(head)
		if n < 3 || n > uint32(MaxJournal) {
			return last, nil
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil || crc32.Checksum(p, crcTable) != binary.LittleEndian.Uint32(head[4:]) {
			return last, nil
		}
		l := int(binary.LittleEndian.Uint16(p[1:]))
		if 3+l > len(p) {
			return last, nil
		}
		last[string(p[3:3+l])] = op{remove: p[0] == 1, data: p[3+l:]}
	}
}

// replay brings every file in line with its last journaled state.
func replay(last map[string]op) error {
	var errs []error
	for path, o := range last {
		if !filepath.IsAbs(path) {
			continue // never written by Files
		}
		errs = append(errs, o.do(path))
	}
	return errors.Join(errs...)
}
