// Command image builds Rewire's container image without Docker: one layer
// holding the static /rewire and /rewired binaries on an empty base, written
// as an image tarball that `ctr -n k8s.io images import` (or `docker load`,
// or `crane push` to a registry) accepts.
//
//	go run ./image -bin ../bin -tag rewire:dev -o ../bin/rewire-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the static rewire and rewired binaries")
	tag := flag.String("tag", "rewire:dev", "image name")
	out := flag.String("o", "rewire-image.tar", "output tarball")
	flag.Parse()
	if err := build(*bin, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s)\n", *out, *tag)
}

func build(bin, tag, out string) error {
	img, err := Image(bin)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// Image assembles the image from the binaries in bin.
func Image(bin string) (v1.Image, error) {
	layerTar, err := binariesTar(bin, "rewire", "rewired")
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/rewired"}
	return mutate.ConfigFile(img, cf)
}

// binariesTar is a tar stream of the named files of dir at the image root.
func binariesTar(dir string, names ...string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		raw, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(raw)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(raw); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
