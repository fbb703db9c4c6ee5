package store

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/pkg/attachment"
)

func TestStoreRoundTrip(t *testing.T) {
	for _, sync := range []bool{false, true} {
		dir := t.TempDir()
		s, err := New(dir, sync)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Flush() })
		sb := &Sandbox{ContainerID: "abc123", NetNS: "/var/run/netns/x", PodNamespace: "default", PodName: "p",
			Attachments: []Attachment{{Spec: attachment.Spec{Network: "default/mv", IfName: "net1", Config: []byte(`{"a":1}`)}, State: Adding}}}
		if err := s.Put(sb); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get("abc123")
		if err != nil || got.Attachments[0].IfName != "net1" || got.Attachments[0].State != Adding {
			t.Fatalf("got %+v %v", got, err)
		}
		ids, _ := s.IDs()
		if len(ids) != 1 || ids[0] != "abc123" {
			t.Errorf("ids = %v", ids)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(filepath.Join(dir, "sandboxes"))
		if len(entries) != 1 {
			t.Errorf("temp files left behind: %v", entries)
		}
		if err := s.Delete("abc123"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete("abc123"); err != nil {
			t.Errorf("second delete: %v", err)
		}
		if got, err := s.Get("abc123"); got != nil || err != nil {
			t.Errorf("after delete: %+v %v", got, err)
		}
	}
}

func TestStoreCorruptAndInvalid(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	os.WriteFile(filepath.Join(dir, "sandboxes", "bad.json"), []byte("{nope"), 0o600)
	if _, err := s.Get("bad"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("want ErrCorrupt, got %v", err)
	}
	if err := s.Quarantine("bad"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "damaged", "bad.json")); err != nil {
		t.Errorf("not quarantined: %v", err)
	}
	for _, id := range []string{"../x", "", "a/b", ".hidden"} {
		if _, err := s.Get(id); err == nil {
			t.Errorf("container ID %q must be refused", id)
		}
	}
}

func TestNewRemovesInterruptedWrites(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	_ = s.Put(&Sandbox{ContainerID: "keep"})
	stale := filepath.Join(dir, "sandboxes", ".keep.json.123")
	os.WriteFile(stale, []byte("{"), 0o600)
	openStore(t, dir) // a restart
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("temp file of an interrupted write survived a restart: %v", err)
	}
	if sb, _ := s.Get("keep"); sb == nil {
		t.Error("a record was removed")
	}
}

func TestRememberNetwork(t *testing.T) {
	s := openStore(t, t.TempDir())
	for range 2 {
		if err := s.RememberNetwork([]byte(`{"name":"n"}`)); err != nil {
			t.Fatal(err)
		}
	}
	s.RememberNetwork([]byte(`{"name":"m"}`))
	nets, _ := s.Networks()
	if len(nets) != 2 {
		t.Errorf("networks = %v", nets)
	}
}

// Commit and Prepare (once waited for) are durable, Put is not except in
// sync mode, Delete never is: a writer (New) appends to its journal and
// fdatasyncs it, a store from Open fsyncs the directory (both shared by
// concurrent callers).
func TestCommitIsDurable(t *testing.T) {
	type counts struct{ journal, dir uint64 }
	for _, tc := range []struct {
		name string
		open func(dir string, sync bool) (*Store, error)
		// the syncs each of Put, Commit and Delete makes, and a Put in sync mode
		put, commit, del, syncPut counts
	}{
		{"New", New, counts{}, counts{journal: 1}, counts{}, counts{journal: 1}},
		{"Open", Open, counts{}, counts{dir: 1}, counts{}, counts{dir: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syncs := func(s *Store) counts {
				c := counts{dir: s.dirSync.syncs()}
				if s.journal != nil {
					c.journal = s.journal.sync.syncs()
				}
				return c
			}
			s, err := tc.open(t.TempDir(), false)
			if err != nil {
				t.Fatal(err)
			}
			for _, step := range []struct {
				name string
				do   func() error
				want counts
			}{
				{"Put", func() error { return s.Put(&Sandbox{ContainerID: "x"}) }, tc.put},
				{"Commit", func() error { return s.Commit(&Sandbox{ContainerID: "x", Complete: true}) }, tc.commit},
				{"Prepare, waited for", func() error {
					wait, err := s.Prepare(&Sandbox{ContainerID: "x"})
					if err != nil {
						return err
					}
					return wait()
				}, tc.commit},
				{"Delete", func() error { return s.Delete("x") }, tc.del},
			} {
				before := syncs(s)
				if err := step.do(); err != nil {
					t.Fatal(err)
				}
				if after := syncs(s); after.journal-before.journal != step.want.journal || after.dir-before.dir != step.want.dir {
					t.Errorf("%s: %d journal and %d directory syncs, want %+v", step.name,
						after.journal-before.journal, after.dir-before.dir, step.want)
				}
			}
			strict, err := tc.open(t.TempDir(), true)
			if err != nil {
				t.Fatal(err)
			}
			for _, step := range []struct {
				name string
				do   func() error
			}{
				{"Put", func() error { return strict.Put(&Sandbox{ContainerID: "x"}) }},
				{"Delete", func() error { return strict.Delete("x") }},
			} {
				before := syncs(strict)
				if err := step.do(); err != nil {
					t.Fatal(err)
				}
				if after := syncs(strict); after.journal-before.journal != tc.syncPut.journal || after.dir-before.dir != tc.syncPut.dir {
					t.Errorf("a %s in sync mode: %+v syncs before, %+v after, want %+v more", step.name, before, after, tc.syncPut)
				}
			}
		})
	}
}

// groupSync: every caller returns only after a sync that started after it
// called, and callers arriving during a sync share the next one.
func TestGroupSync(t *testing.T) {
	var g groupSync
	var mu sync.Mutex
	var starts []time.Time
	slow := func() error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		return nil
	}
	const callers = 40
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			called := time.Now()
			if err := g.do(slow); err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			covered := false
			for _, st := range starts {
				covered = covered || !st.Before(called)
			}
			if !covered {
				t.Error("a caller returned before any sync that started after its call")
			}
		})
	}
	wg.Wait()
	if g.Syncs >= callers {
		t.Errorf("%d syncs for %d concurrent callers: nothing shared", g.Syncs, callers)
	}
	t.Logf("%d callers, %d syncs", callers, g.Syncs)
}

// One writer: a second LockDir fails at once without wait, and succeeds
// once the holder lets go; Exists refuses a dir without a store.
func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	unlock, err := LockDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDir(dir, false); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	unlock()
	again, err := LockDir(dir, false)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	again()
	if err := Exists(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("Exists of a dir without a store succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "nope")); !os.IsNotExist(err) {
		t.Fatalf("Exists created the dir (%v)", err)
	}
}
