package writebehind

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// open opens the journal in dir; held, the files are not written (as if
// the process died before its goroutines wrote them).
func open(t *testing.T, dir string, held bool) *Files {
	t.Helper()
	f, err := Open(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	f.hold = held
	t.Cleanup(func() { f.Close() })
	return f
}

func content(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Writes and removals are served from memory at once and reach the disk
// behind the caller; a crash before they do loses none of them: the next
// Open writes them.
func TestCrashBeforeTheFilesAreWritten(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "results", "a"), filepath.Join(dir, "results", "b"), filepath.Join(dir, "c")
	must(t, os.WriteFile(c, []byte("old c"), 0o600))
	f := open(t, dir, true)
	must(t, f.WriteFile(a, []byte("a1")))
	must(t, f.WriteFile(a, []byte("a2"))) // the last write wins
	must(t, f.WriteFile(b, []byte("b1")))
	must(t, f.Remove(b))
	must(t, f.WriteFile(c, []byte("new c")))
	must(t, f.Remove(c))
	for path, want := range map[string]string{a: "a2", b: "<none>", c: "<none>"} {
		got, err := f.ReadFile(path)
		if (want == "<none>") != errors.Is(err, os.ErrNotExist) || (err == nil && string(got) != want) {
			t.Errorf("ReadFile(%s) = %q, %v; want %s", path, got, err, want)
		}
	}
	if got := content(t, a); got != "<none>" {
		t.Fatalf("a written while held: %q", got)
	}
	open(t, dir, false) // the process after the crash
	for path, want := range map[string]string{a: "a2", b: "<none>", c: "<none>"} {
		if got := content(t, path); got != want {
			t.Errorf("after the replay %s holds %q, want %q", path, got, want)
		}
	}
}

// A torn last entry (the crash hit the journal write) ends the journal:
// the entries before it are replayed.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	f := open(t, dir, true)
	must(t, f.WriteFile(a, []byte("a1")))
	torn := encode(filepath.Join(dir, "b"), op{data: []byte("b1")})
	if _, err := f.journal.WriteAt(torn[:len(torn)-1], f.off); err != nil {
		t.Fatal(err)
	}
	open(t, dir, false)
	if got, gotB := content(t, a), content(t, filepath.Join(dir, "b")); got != "a1" || gotB != "<none>" {
		t.Errorf("a %q (want a1), b %q (want none)", got, gotB)
	}
}

// Once the files are written the journal is empty: a replay never undoes
// what was done to a file after (libcni's own GC removing it).
func TestReplayUndoesNothingLater(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	f := open(t, dir, false)
	must(t, f.WriteFile(a, []byte("a1")))
	must(t, f.Flush())
	if fi, err := os.Stat(filepath.Join(dir, "journal")); err != nil || fi.Size() != 0 {
		t.Fatalf("journal after the files were written: %v, %v", fi, err)
	}
	must(t, os.Remove(a))
	open(t, dir, false)
	if got := content(t, a); got != "<none>" {
		t.Errorf("the replay brought back %q", got)
	}
}

// Concurrent writers and removers of many files: each file ends as its
// last call left it, the journal empty.
func TestConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir, false)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			path := filepath.Join(dir, "results", fmt.Sprint(i))
			for n := range 20 {
				if err := f.WriteFile(path, fmt.Appendf(nil, "%d-%d", i, n)); err != nil {
					t.Error(err)
				}
				if i%2 == 0 {
					if err := f.Remove(path); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	must(t, f.Flush())
	for i := range 40 {
		want := fmt.Sprintf("%d-19", i)
		if i%2 == 0 {
			want = "<none>"
		}
		if got := content(t, filepath.Join(dir, "results", fmt.Sprint(i))); got != want {
			t.Errorf("file %d holds %q, want %q", i, got, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "journal")); err != nil || fi.Size() != 0 {
		t.Errorf("journal left: %v, %v", fi, err)
	}
}

// A full journal makes a write synchronous, not an error.
func TestFullJournal(t *testing.T) {
	defer func(v int64) { MaxJournal = v }(MaxJournal)
	MaxJournal = 200
	dir := t.TempDir()
	f := open(t, dir, false)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	f.wmu.Lock() // the goroutines fall behind
	must(t, f.WriteFile(a, make([]byte, 100)))
	f.wmu.Unlock()
	must(t, f.WriteFile(b, make([]byte, 150))) // written before it returns
	if got := content(t, b); len(got) != 150 {
		t.Errorf("b holds %q", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
