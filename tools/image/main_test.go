package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestImageHoldsBinariesAndEntrypoint(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"rewire", "rewired"} {
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
		if h.Mode != 0o755 {
			t.Errorf("%s mode %o", h.Name, h.Mode)
		}
		found[h.Name] = string(b)
	}
	if found["rewire"] != "binary rewire" || found["rewired"] != "binary rewired" {
		t.Errorf("layer files = %v", found)
	}
}
