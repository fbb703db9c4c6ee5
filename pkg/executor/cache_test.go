package executor

import (
	"os"
	"path/filepath"
	"testing"
)

// cacheMayAdd reads only the names in libcni's cache: a file of the
// container that the record does not explain sends DEL to read the cache,
// files of other containers and of known attachments do not.
func TestCacheMayAdd(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "results")
	if err := os.MkdirAll(results, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"cluster-c1-eth0", "net-a-c1-net1", "cluster-c2-eth0", "net-a-c12-net1"} {
		if err := os.WriteFile(filepath.Join(results, n), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	both := map[[2]string]bool{{"cluster", "eth0"}: true, {"net-a", "net1"}: true}
	for _, tc := range []struct {
		name, cacheDir, id string
		known              map[[2]string]bool
		want               bool
	}{
		{"every file known", dir, "c1", both, false},
		{"a file unknown", dir, "c1", map[[2]string]bool{{"cluster", "eth0"}: true}, true},
		{"only other containers' files", dir, "c3", nil, false},
		{"a container ID inside another", dir, "c12", nil, true},
		{"no cache yet", filepath.Join(dir, "none"), "c1", nil, false},
		{"cache dir not known", "", "c1", both, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Executor{CacheDir: tc.cacheDir}
			if got := e.cacheMayAdd(tc.id, tc.known); got != tc.want {
				t.Errorf("cacheMayAdd(%s) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
	// With an index of the names, the directory is not read.
	for _, tc := range []struct {
		name  string
		index index
		want  bool
	}{
		{"index: every file known", index{names: []string{"cluster-c1-eth0"}}, false},
		{"index: a file unknown", index{names: []string{"cluster-c1-eth0", "net-b-c1-net2"}}, true},
		{"index fails", index{err: os.ErrPermission}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Executor{CacheDir: filepath.Join(dir, "none"), Cache: tc.index}
			if got := e.cacheMayAdd("c1", both); got != tc.want {
				t.Errorf("cacheMayAdd = %v, want %v", got, tc.want)
			}
		})
	}
}

// index is a CacheIndex with fixed names.
type index struct {
	names []string
	err   error
}

func (i index) CachedNames(string) ([]string, error) { return i.names, i.err }
func (i index) Forget()                              {}
