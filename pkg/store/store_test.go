package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rewire-cni/rewire/pkg/attachment"
)

func TestStoreRoundTrip(t *testing.T) {
	for _, sync := range []bool{false, true} {
		dir := t.TempDir()
		s, err := New(dir, sync)
		if err != nil {
			t.Fatal(err)
		}
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
	s, _ := New(dir, false)
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
	s, _ := New(dir, false)
	_ = s.Put(&Sandbox{ContainerID: "keep"})
	stale := filepath.Join(dir, "sandboxes", ".keep.json.123")
	os.WriteFile(stale, []byte("{"), 0o600)
	if _, err := New(dir, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("temp file of an interrupted write survived a restart: %v", err)
	}
	if sb, _ := s.Get("keep"); sb == nil {
		t.Error("a record was removed")
	}
}

func TestRememberNetwork(t *testing.T) {
	s, _ := New(t.TempDir(), false)
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

func TestGroupCommit(t *testing.T) {
	s, _ := New(t.TempDir(), false)
	if err := s.Put(&Sandbox{ContainerID: "x"}); err != nil {
		t.Fatal(err)
	}
	if !s.dirty.Load() {
		t.Fatal("an unsynced write must mark the store dirty")
	}
	if err := s.Flush(); err != nil || s.dirty.Load() {
		t.Fatalf("flush: %v, dirty %v", err, s.dirty.Load())
	}
	strict, _ := New(t.TempDir(), true)
	_ = strict.Put(&Sandbox{ContainerID: "x"})
	if strict.dirty.Load() {
		t.Error("a synced write leaves nothing to group-commit")
	}
}
