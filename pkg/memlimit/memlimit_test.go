package memlimit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOwn(t *testing.T) {
	cases := []struct {
		name       string
		files      map[string]string // relative to the cgroup root
		procCgroup string
		want       int64
		wantOK     bool
	}{
		{"v2 own cgroup", map[string]string{"kubepods/pod1/c1/memory.max": "536870912\n"},
			"0::/kubepods/pod1/c1\n", 512 << 20, true},
		{"v2 cgroup namespace (mounted as root)", map[string]string{"memory.max": "536870912\n"},
			"0::/\n", 512 << 20, true},
		{"v2 no limit", map[string]string{"memory.max": "max\n"}, "0::/\n", 0, false},
		{"v1 own cgroup", map[string]string{"memory/kubepods/c1/memory.limit_in_bytes": "268435456\n"},
			"4:memory:/kubepods/c1\n0::/\n", 256 << 20, true},
		{"v1 container mounted as root (host path not visible)", map[string]string{"memory/memory.limit_in_bytes": "268435456\n"},
			"4:memory:/kubepods/c1\n0::/\n", 256 << 20, true},
		{"v1 memory wins over the hybrid v2 line", map[string]string{"memory/memory.limit_in_bytes": "268435456\n", "memory.max": "max\n"},
			"4:memory:/\n0::/\n", 256 << 20, true},
		{"v1 no limit", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"},
			"4:cpu,memory:/\n", 0, false},
		{"no cgroup file", nil, "0::/x\n", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for rel, content := range tc.files {
				p := filepath.Join(root, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, ok, err := Own(root, []byte(tc.procCgroup))
			if err != nil || got != tc.want || ok != tc.wantOK {
				t.Fatalf("Own = %d, %v, %v; want %d, %v", got, ok, err, tc.want, tc.wantOK)
			}
		})
	}
}

func TestOwnBadFile(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Own(root, []byte("0::/\n")); err == nil {
		t.Fatal("a limit that is not a number must be an error")
	}
}

func TestSlots(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		want  int
	}{
		{512 << 20, (512 - 64) / 24},
		{128 << 20, MinSlots},
		{32 << 20, MinSlots},
		{2 << 30, (2048 - 64) / 24},
	} {
		if got := Slots(tc.limit); got != tc.want {
			t.Errorf("Slots(%d MiB) = %d, want %d", tc.limit>>20, got, tc.want)
		}
	}
}
