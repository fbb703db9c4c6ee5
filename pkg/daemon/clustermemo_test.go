package daemon

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// The memo reads the cluster network again exactly when its directory
// changed: a config replaced by a rename or rewritten, a chain file
// added or edited, a file removed.
func TestClusterMemo(t *testing.T) {
	dir := t.TempDir()
	chain := filepath.Join(dir, "cluster.d")
	write := func(name, content string) {
		t.Helper()
		tmp := filepath.Join(t.TempDir(), "tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("10-cluster.conflist", `{"name":"a"}`)
	if err := os.Mkdir(chain, 0o755); err != nil {
		t.Fatal(err)
	}
	var m clusterMemo
	loads := 0
	get := func() {
		t.Helper()
		if _, err := m.get(dir, func() (*libcni.NetworkConfigList, error) {
			loads++
			return &libcni.NetworkConfigList{}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		name   string
		change func()
		reload bool
	}{
		{"first use", func() {}, true},
		{"unchanged", func() {}, false},
		{"config replaced by a rename", func() { write("10-cluster.conflist", `{"name":"b"}`) }, true},
		{"config rewritten in place, same size", func() {
			// Until its modification time moved on (the file system's
			// timestamps are coarse): what the memo can see.
			p := filepath.Join(dir, "10-cluster.conflist")
			old, _ := os.Stat(p)
			for deadline := time.Now().Add(time.Second); ; {
				if err := os.WriteFile(p, []byte(`{"name":"c"}`), 0o644); err != nil {
					t.Fatal(err)
				}
				if st, _ := os.Stat(p); !st.ModTime().Equal(old.ModTime()) || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}, true},
		{"chain file added", func() {
			if err := os.WriteFile(filepath.Join(chain, "tuning.conf"), []byte(`{"type":"tuning"}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"chain file edited", func() {
			if err := os.WriteFile(filepath.Join(chain, "tuning.conf"), []byte(`{"type":"tuning","mtu":1400}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"unchanged again", func() {}, false},
		{"file removed", func() {
			if err := os.Remove(filepath.Join(chain, "tuning.conf")); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		before := loads
		step.change()
		get()
		if reloaded := loads > before; reloaded != step.reload {
			t.Errorf("%s: read again %v, want %v", step.name, reloaded, step.reload)
		}
	}
}
