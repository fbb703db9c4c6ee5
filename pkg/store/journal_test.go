package store

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A power loss cannot be caused here, so these tests put on disk what one
// may leave of writes that were not synced (a record file missing, older,
// torn, or a removal undone) and check that reopening the store (New, as
// the daemon and the no-daemon DEL do) restores every committed state.

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := New(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Flush() }) // no file written after the test
	return s
}

func recordFile(dir, id string) string { return filepath.Join(dir, "sandboxes", id+".json") }

func TestJournalRestoresCommittedRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lose changes the files as a power loss may have left them;
		// older is the file content before the commit.
		lose func(t *testing.T, path string, older []byte)
	}{
		{"file missing", func(t *testing.T, path string, _ []byte) { must(t, os.Remove(path)) }},
		{"file older", func(t *testing.T, path string, older []byte) { must(t, os.WriteFile(path, older, 0o600)) }},
		{"file torn", func(t *testing.T, path string, _ []byte) { must(t, os.WriteFile(path, []byte(`{"contai`), 0o600)) }},
		{"file empty", func(t *testing.T, path string, _ []byte) { must(t, os.WriteFile(path, nil, 0o600)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			must(t, s.Put(&Sandbox{ContainerID: "c1", PodName: "p"}))
			must(t, s.Flush())
			older, err := os.ReadFile(recordFile(dir, "c1"))
			must(t, err)
			must(t, s.Commit(&Sandbox{ContainerID: "c1", PodName: "p", Complete: true}))
			must(t, s.Flush())
			tc.lose(t, recordFile(dir, "c1"), older)

			got, err := openStore(t, dir).Get("c1")
			if err != nil || got == nil || !got.Complete {
				t.Fatalf("after reopening: %+v, %v; want the committed record", got, err)
			}
		})
	}
}

// An ADD prepares its record (every attachment, durable) and writes the
// completed record without a sync: after a power loss the store holds the
// completed record if its write reached the disk, else the prepared one
// (rolled back at restart), never neither.
func TestPreparedRecordSurvives(t *testing.T) {
	for _, lost := range []bool{false, true} {
		dir := t.TempDir()
		s := openStore(t, dir)
		wait, err := s.Prepare(&Sandbox{ContainerID: "c1", PodName: "p"})
		must(t, err)
		must(t, wait())
		synced, err := os.ReadFile(filepath.Join(dir, "journal"))
		must(t, err)
		must(t, s.Put(&Sandbox{ContainerID: "c1", PodName: "p", Complete: true}))
		must(t, s.Flush())
		if lost { // neither the file nor the journal entry reached the disk
			must(t, os.Remove(recordFile(dir, "c1")))
			must(t, os.WriteFile(filepath.Join(dir, "journal"), synced, 0o600))
		}
		got, err := openStore(t, dir).Get("c1")
		if err != nil || got == nil || got.Complete == lost {
			t.Errorf("completed write lost %v: after reopening %+v, %v", lost, got, err)
		}
	}
}

// A removal is replayed over a file it removed that came back, and a newer
// write that survived (not synced: its operation was never answered) is
// not replaced by an older journal entry.
func TestJournalReplaysRemovalsAndKeepsNewerFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	must(t, s.Commit(&Sandbox{ContainerID: "gone", Complete: true}))
	must(t, s.Flush())
	stale, err := os.ReadFile(recordFile(dir, "gone"))
	must(t, err)
	must(t, s.Delete("gone"))
	must(t, s.Flush())
	must(t, os.WriteFile(recordFile(dir, "gone"), stale, 0o600)) // the removal undone

	must(t, s.Commit(&Sandbox{ContainerID: "kept", Complete: true}))
	synced, err := os.ReadFile(filepath.Join(dir, "journal"))
	must(t, err)
	must(t, s.Put(&Sandbox{ContainerID: "kept", PodName: "newer"}))
	must(t, s.Flush())
	// The newer file survived unsynced, its journal entry did not (nor
	// the removal's: the file that came back stands for that).
	must(t, os.WriteFile(filepath.Join(dir, "journal"), synced, 0o600))

	r := openStore(t, dir)
	if got, err := r.Get("gone"); got != nil || err != nil {
		t.Errorf("removed record came back: %+v, %v", got, err)
	}
	if got, err := r.Get("kept"); err != nil || got == nil || got.PodName != "newer" {
		t.Errorf("newer record replaced by the journal: %+v, %v", got, err)
	}
	// Sequence numbers go on from the newest known write.
	must(t, r.Put(&Sandbox{ContainerID: "next"}))
	next, _ := r.Get("next")
	kept, _ := r.Get("kept")
	if next.Seq <= kept.Seq {
		t.Errorf("sequence restarted: new write %d, older record %d", next.Seq, kept.Seq)
	}
}

// When the journal is full it is compacted to the live records: a store
// whose files were all lost after many commits and removals comes back
// with exactly the live ones, and a torn tail is ignored.
func TestJournalCompaction(t *testing.T) {
	defer func(n int64) { JournalSize = n }(JournalSize)
	JournalSize = 4 << 10
	dir := t.TempDir()
	s := openStore(t, dir)
	want := map[string]bool{}
	for i := range 200 {
		id := fmt.Sprintf("c%d", i%40)
		if i%3 == 0 {
			must(t, s.Delete(id))
			delete(want, id)
			continue
		}
		must(t, s.Commit(&Sandbox{ContainerID: id, PodName: fmt.Sprint(i), Complete: true}))
		want[id] = true
	}
	if st, err := os.Stat(filepath.Join(dir, "journal")); err != nil || st.Size() > 4<<10+64<<10 {
		t.Fatalf("journal not compacted: %v, %v", st, err)
	}
	live, _ := s.IDs()
	records := map[string]string{}
	for _, id := range live {
		sb, _ := s.Get(id)
		records[id] = sb.PodName
	}
	// A torn write after the last entry.
	f, err := os.OpenFile(filepath.Join(dir, "journal"), os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt([]byte{200, 0, 0, 0, 1, 2, 3, 4, '{'}, s.journal.off)
	must(t, err)
	f.Close()
	for _, id := range live {
		must(t, os.Remove(recordFile(dir, id)))
	}

	r := openStore(t, dir)
	ids, _ := r.IDs()
	if len(ids) != len(want) {
		t.Fatalf("after losing every file: %d records %v, want %d", len(ids), ids, len(want))
	}
	for _, id := range ids {
		sb, err := r.Get(id)
		if err != nil || !want[id] || sb.PodName != records[id] {
			t.Errorf("record %s: %+v, %v; want pod %q", id, sb, err, records[id])
		}
	}
}

// Concurrent commits share fdatasyncs, and each returns only when its own
// entry is in the journal: the first sync waits until every commit asked
// for one, so that all of them arrive while it runs and share the next.
func TestJournalGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	before, asked := s.journal.sync.syncs(), s.journal.sync.callers()
	const n = 50
	var first sync.Once
	s.journal.syncing = func() {
		first.Do(func() {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if s.journal.sync.callers()-asked == n {
					return
				}
			}
			t.Error("the commits never all asked for a sync")
		})
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := s.Commit(&Sandbox{ContainerID: fmt.Sprintf("c%d", i), Complete: true}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	last, err := readJournal(filepath.Join(dir, "journal"))
	must(t, err)
	if len(last) != n {
		t.Errorf("journal holds %d records, want %d", len(last), n)
	}
	if syncs := s.journal.sync.syncs() - before; syncs > 2 {
		t.Errorf("%d fdatasyncs for %d commits that all arrived during the first, want at most 2", syncs, n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
