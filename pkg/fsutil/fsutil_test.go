package fsutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "new/dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, content string
		mode          os.FileMode
		sync          bool
	}{{"new/dir/f", "one", 0o600, true}, {"new/dir/f", "two", 0o755, false}} {
		p := filepath.Join(dir, c.name)
		if err := WriteAtomic(p, c.mode, strings.NewReader(c.content), c.sync); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		st, serr := os.Stat(p)
		if err != nil || serr != nil || string(b) != c.content || st.Mode().Perm() != c.mode {
			t.Errorf("%s: %q %v, mode %v %v", c.name, b, err, st.Mode(), serr)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "new/dir"))
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	if err := WriteAtomic(filepath.Join(dir, "new/dir/f/under-a-file"), 0o600, strings.NewReader("x"), false); err == nil {
		t.Error("writing under a file succeeded")
	}
}
