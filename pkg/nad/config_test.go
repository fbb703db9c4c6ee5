package nad

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfList(t *testing.T) {
	cases := []struct{ name, in, def, wantName, wantErr string }{
		{"single conf gets wrapped", `{"cniVersion":"0.3.1","name":"a","type":"macvlan"}`, "x", "a", ""},
		{"name injected", `{"cniVersion":"0.3.1","type":"macvlan"}`, "nad-name", "nad-name", ""},
		{"empty name injected", `{"cniVersion":"0.3.1","name":"","plugins":[{"type":"bridge"}]}`, "nad-name", "nad-name", ""},
		{"list kept", `{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge"},{"type":"tuning"}]}`, "x", "l", ""},
		{"no version", `{"name":"a","type":"macvlan"}`, "x", "", "no cniVersion"},
		{"not json", `{`, "x", "", "invalid CNI config JSON"},
		{"path type", `{"cniVersion":"1.0.0","name":"a","type":"/usr/bin/evil"}`, "x", "", "bare plugin name"},
		{"dotdot type", `{"cniVersion":"1.0.0","name":"a","type":".."}`, "x", "", "bare plugin name"},
		{"path ipam type", `{"cniVersion":"1.0.0","name":"a","type":"macvlan","ipam":{"type":"../host-local"}}`, "x", "", "ipam type"},
		{"path type in list", `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"},{"type":"a/b"}]}`, "x", "", "plugin 1"},
		{"missing type", `{"cniVersion":"1.0.0","name":"a"}`, "x", "", "missing 'type'"},
		{"empty plugins", `{"cniVersion":"1.0.0","name":"a","plugins":[]}`, "x", "", "no plugins"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			list, err := ConfList([]byte(c.in), c.def)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if list.Name != c.wantName || !strings.Contains(string(list.Bytes), `"plugins"`) {
				t.Errorf("got name %q bytes %s", list.Name, list.Bytes)
			}
		})
	}
}

func TestFindConfByNameStaysInDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-a.conf", `{"cniVersion":"0.3.1","name":"alpha","type":"bridge"}`)
	write("20-b.conflist", `{"cniVersion":"1.0.0","name":"beta","plugins":[{"type":"macvlan"}]}`)
	write("30-broken.conf", `{`)
	if l, err := FindConfByName(dir, "beta"); err != nil || l.Name != "beta" {
		t.Fatalf("beta: %v %v", l, err)
	}
	for _, name := range []string{"../etc/passwd", "10-a.conf", "gamma"} {
		if _, err := FindConfByName(dir, name); err == nil {
			t.Errorf("lookup of %q must fail (names are matched inside files, never used as paths)", name)
		}
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "n.conf"), []byte(`{"cniVersion":"0.3.1","name":"from-file","type":"bridge"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &NetworkAttachmentDefinition{}
	n.Name, n.Namespace = "from-file", "default"
	l, err := Resolve(n, dir)
	if err != nil || l.Name != "from-file" {
		t.Fatalf("empty spec.config should load the file: %v %v", l, err)
	}
	n.Name = "missing"
	if _, err := Resolve(n, dir); err == nil || !strings.Contains(err.Error(), "default/missing has no spec.config") {
		t.Errorf("error = %v", err)
	}
}

func TestLoadPathSkipsRewire(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "00-rewire.conflist"), []byte(`{"cniVersion":"1.1.0","name":"rw","plugins":[{"type":"rewire"}]}`), 0o644)
	os.WriteFile(filepath.Join(dir, "10-flannel.conflist"), []byte(`{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge"}]}`), 0o644)
	l, err := LoadPath(dir, "rewire")
	if err != nil || l.Name != "cbr0" {
		t.Fatalf("got %v %v", l, err)
	}
}
