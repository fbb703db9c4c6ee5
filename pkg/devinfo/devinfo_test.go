package devinfo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A container ID or interface name that is not a plain name never takes a
// device-info file out of the dir, nor widens CleanSandbox's pattern.
func TestPathsStayInDir(t *testing.T) {
	base := t.TempDir()
	d := Dir(filepath.Join(base, "devinfo"))
	if err := os.MkdirAll(filepath.Join(string(d), "dp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.DPPath("example.com/vf", "0000:01:00.1"), []byte(`{"type":"pci"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, containerID, ifName string }{
		{"container ID ../../etc", "../../etc", "net1"},
		{"container ID escaping", "x/../../../escaped", "net1"},
		{"interface name escaping", "c1", "../../../esc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := d.Prepare("example.com/vf", "0000:01:00.1", "ns/net", c.containerID, c.ifName)
			if err == nil || !strings.Contains(err.Error(), "invalid") {
				t.Errorf("Prepare wrote %q, err %v; want a refusal", p, err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(base, "escaped-net1-device.json")); err == nil {
		t.Error("a device-info file was written outside the dir")
	}
	good, err := d.Prepare("example.com/vf", "0000:01:00.1", "ns/net", "c1", "net1")
	if err != nil || filepath.Dir(good) != filepath.Join(string(d), "cni") {
		t.Fatalf("valid names: %q %v", good, err)
	}
	if err := d.CleanSandbox("*"); err == nil {
		t.Error(`CleanSandbox("*") must be refused: it would remove every sandbox's files`)
	}
	if _, err := os.Stat(good); err != nil {
		t.Errorf("another sandbox's file is gone: %v", err)
	}
	if err := d.CleanSandbox("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(good); !os.IsNotExist(err) {
		t.Errorf("CleanSandbox(c1) left %s: %v", good, err)
	}
}
