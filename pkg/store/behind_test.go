package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A record is served from memory until its file is written; a process
// crash before that loses nothing (the next writer's replay writes the
// file), and a compaction meanwhile keeps it.
func TestRecordFilesWrittenBehind(t *testing.T) {
	defer func(size int64) { JournalSize = size }(JournalSize)
	JournalSize = 4 << 10 // a few records: the writes below compact it
	dir := t.TempDir()
	s := openStore(t, dir)
	s.behind.hold = true // no file is written: the crash comes first
	before, err := os.Stat(filepath.Join(dir, "journal"))
	must(t, err)
	for i := range 20 {
		must(t, s.Put(&Sandbox{ContainerID: fmt.Sprintf("c%d", i), PodName: "p", Attachments: []Attachment{{State: Adding, Result: []byte(`"` + strings.Repeat("x", 300) + `"`)}}}))
	}
	must(t, s.Delete("c0"))
	if now, err := os.Stat(filepath.Join(dir, "journal")); err != nil || os.SameFile(before, now) {
		t.Fatalf("the journal was not compacted meanwhile (%v)", err)
	}
	if _, err := os.Stat(recordFile(dir, "c1")); !os.IsNotExist(err) {
		t.Fatalf("a held record's file was written: %v", err)
	}
	if sb, err := s.Get("c1"); err != nil || sb == nil || sb.PodName != "p" {
		t.Fatalf("pending record: %+v, %v", sb, err)
	}
	if ids, _ := s.IDs(); len(ids) != 19 {
		t.Errorf("IDs lists %d records, want 19", len(ids))
	}

	after := openStore(t, dir) // the process crashed; the next writer opens
	for i := range 20 {
		sb, err := after.Get(fmt.Sprintf("c%d", i))
		if err != nil || (sb == nil) != (i == 0) {
			t.Errorf("c%d after the crash: %+v, %v", i, sb, err)
		}
	}
	if _, err := os.Stat(recordFile(dir, "c1")); err != nil {
		t.Errorf("replay did not write the file: %v", err)
	}
}

// Writes behind never bring back a removed record, and every record's file
// ends up holding its last write.
func TestWriteBehindRacesRemovals(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("c%d", i)
			for n := range 5 {
				must(t, s.Put(&Sandbox{ContainerID: id, PodName: fmt.Sprint(n)}))
			}
			if i%2 == 0 {
				must(t, s.Delete(id))
			}
		}()
	}
	wg.Wait()
	must(t, s.Flush())
	files, err := filepath.Glob(filepath.Join(dir, "sandboxes", "*.json"))
	must(t, err)
	if len(files) != 50 {
		t.Errorf("%d record files, want 50", len(files))
	}
	for i := 1; i < 100; i += 2 {
		sb, _, err := readHead(recordFile(dir, fmt.Sprintf("c%d", i)))
		if err != nil || !strings.Contains(string(sb), `"podName":"4"`) {
			t.Errorf("c%d's file: %s, %v", i, sb, err)
		}
	}
	if n := len(s.behind.snapshot()); n != 0 {
		t.Errorf("%d records still pending after Flush", n)
	}
}

// A removal is served at once while its file is still there, survives a
// crash before the file went, and a record written again after it wins.
func TestRemovalsBehind(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	for _, id := range []string{"gone", "back"} {
		must(t, s.Put(&Sandbox{ContainerID: id, PodName: "p"}))
	}
	must(t, s.Flush())
	s.behind.hold = true
	must(t, s.Delete("gone"))
	must(t, s.Delete("back"))
	must(t, s.Put(&Sandbox{ContainerID: "back", PodName: "again"}))
	if _, err := os.Stat(recordFile(dir, "gone")); err != nil {
		t.Fatalf("the held removal already removed the file: %v", err)
	}
	if sb, err := s.Get("gone"); sb != nil || err != nil {
		t.Errorf("removed record: %+v, %v", sb, err)
	}
	if ids, _ := s.IDs(); len(ids) != 1 || ids[0] != "back" {
		t.Errorf("IDs = %v, want [back]", ids)
	}
	if err := s.Delete("gone"); err != nil { // again: nothing more to do
		t.Fatal(err)
	}

	after := openStore(t, dir) // the process crashed before the files were changed
	if _, err := os.Stat(recordFile(dir, "gone")); !os.IsNotExist(err) {
		t.Errorf("replay left the removed record's file: %v", err)
	}
	if sb, err := after.Get("back"); err != nil || sb == nil || sb.PodName != "again" {
		t.Errorf("the record written after its removal: %+v, %v", sb, err)
	}
}
