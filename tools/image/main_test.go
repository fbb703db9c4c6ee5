package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestImageHoldsBinariesAndEntrypoint(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"rewire", "rewire-plugin", "rewired"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("binary "+n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "img.tar")
	if err := build(dir, "rewire:test", out); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil || cf.Config.Entrypoint[0] != "/rewired" || cf.OS != "linux" {
		t.Fatalf("config: %+v %v", cf, err)
	}
	layers, _ := img.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	found := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Mode != 0o755 {
			t.Errorf("%s mode %o", h.Name, h.Mode)
		}
		found[h.Name] = string(b)
	}
	if found["rewire"] != "binary rewire" || found["rewire-plugin"] != "binary rewire-plugin" || found["rewired"] != "binary rewired" {
		t.Errorf("layer files = %v", found)
	}
}

// layerEntries reads the single layer of an image: name -> header.
func layerEntries(t *testing.T, img interface {
	Layers() ([]v1.Layer, error)
}) map[string]*tar.Header {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	out := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

func TestHostFilesKeepSymlinkChains(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"rewire", "rewire-plugin", "rewired"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	host := filepath.Join(dir, "host")
	if err := os.MkdirAll(filepath.Join(host, "sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "sbin/multi"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("multi", filepath.Join(host, "sbin/tool")); err != nil {
		t.Fatal(err)
	}
	img, err := Image(dir, filepath.Join(host, "sbin/tool"))
	if err != nil {
		t.Fatal(err)
	}
	got := layerEntries(t, img)
	if h := got["var/run"]; h == nil || h.Linkname != "/run" {
		t.Errorf("var/run = %+v, want a symlink to /run (runtimes name netns /var/run/netns/...)", h)
	}
	rel := strings.TrimPrefix(host, "/")
	if h := got[rel+"/sbin/tool"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "multi" {
		t.Errorf("symlink entry = %+v", h)
	}
	if h := got[rel+"/sbin/multi"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
		t.Errorf("target entry = %+v", h)
	}
}

func TestPauseAndBusyboxImages(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pause"), []byte("p"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := PauseImage(filepath.Join(dir, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	if cf, _ := img.ConfigFile(); cf.Config.Entrypoint[0] != "/pause" {
		t.Errorf("pause entrypoint = %v", cf.Config.Entrypoint)
	}
	if layerEntries(t, img)["pause"] == nil {
		t.Error("no /pause in the pause image")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if os.Getenv("REWIRE_SKIP_ROOT_TESTS") == "1" {
			t.Skip("no /bin/busybox (Debian busybox-static); skipped: REWIRE_SKIP_ROOT_TESTS=1")
		}
		t.Fatal("no /bin/busybox: install Debian busybox-static (hack/deps.sh test does), or set REWIRE_SKIP_ROOT_TESTS=1 to skip on purpose")
	}
	img, err = BusyboxImage("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	got := layerEntries(t, img)
	for _, a := range []string{"bin/sh", "sbin/ip", "bin/ping", "bin/sleep"} {
		if h := got[a]; h == nil || h.Linkname != "/bin/busybox" {
			t.Errorf("applet %s = %+v", a, h)
		}
	}
}
