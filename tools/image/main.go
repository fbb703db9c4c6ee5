// Command image builds container images without Docker, each as an image
// tarball that `ctr -n k8s.io images import` (or `docker load`, or
// `crane push` to a registry) accepts:
//
//   - rewire (default): one layer holding the static /rewire (C),
//     /rewire-plugin (Go) and /rewired
//     binaries, plus any -host-file (with its symlink chain) copied from this
//     machine at the same path — make image adds iptables and its libraries
//     this way, which the bridge (ipMasq) and portmap delegates exec;
//
//   - pause: the static pause binary as /pause (registry.k8s.io/pause:3.10 for
//     the end-to-end node, which has no registry);
//
//   - busybox: a static busybox as /bin/busybox with one symlink per applet.
//
//     go run ./image -bin ../bin -tag rewire:dev -o ../bin/rewire-image.tar
//     go run ./image -kind pause -bin ../bin -o ../bin/pause-image.tar
//     go run ./image -kind busybox -busybox /bin/busybox -o ../bin/busybox-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// defaultPath is the PATH of every image.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	kind := flag.String("kind", "rewire", "image to build: rewire, pause or busybox")
	bin := flag.String("bin", "bin", "directory holding the static binaries (rewire and rewired, or pause)")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (kind busybox)")
	tag := flag.String("tag", "", "image name (default rewire:dev, registry.k8s.io/pause:3.10 or busybox:e2e)")
	out := flag.String("o", "", "output tarball (default <kind>-image.tar)")
	var hostFiles list
	flag.Var(&hostFiles, "host-file", "a file of this machine to copy into the rewire image at the same path (repeatable)")
	flag.Parse()
	if *out == "" {
		*out = *kind + "-image.tar"
	}
	var img v1.Image
	var err error
	switch *kind {
	case "rewire":
		*tag = or(*tag, "rewire:dev")
		img, err = Image(*bin, hostFiles...)
	case "pause":
		*tag = or(*tag, "registry.k8s.io/pause:3.10")
		img, err = PauseImage(filepath.Join(*bin, "pause"))
	case "busybox":
		*tag = or(*tag, "busybox:e2e")
		img, err = BusyboxImage(*busybox)
	default:
		err = fmt.Errorf("unknown -kind %q (rewire, pause or busybox)", *kind)
	}
	if err == nil {
		err = write(img, *tag, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s)\n", *out, *tag)
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func build(bin, tag, out string) error {
	img, err := Image(bin)
	if err != nil {
		return err
	}
	return write(img, tag, out)
}

func write(img v1.Image, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// Image assembles Rewire's image from the binaries in bin and the host files.
func Image(bin string, hostFiles ...string) (v1.Image, error) {
	l := newLayer()
	// Runtimes name pod network namespaces /var/run/netns/...; the DaemonSet
	// mounts the host's /run/netns, so /var/run must lead to /run as on hosts.
	l.dir("run")
	l.symlink("var/run", "/run")
	for _, n := range []string{"rewire", "rewire-plugin", "rewired"} {
		if err := l.file(filepath.Join(bin, n), n, 0o755); err != nil {
			return nil, err
		}
	}
	for _, f := range hostFiles {
		if err := l.hostPath(f); err != nil {
			return nil, err
		}
	}
	return l.image([]string{"/rewired"}, nil)
}

// PauseImage is the sandbox image: the pause binary as /pause.
func PauseImage(pause string) (v1.Image, error) {
	l := newLayer()
	if err := l.file(pause, "pause", 0o755); err != nil {
		return nil, err
	}
	return l.image([]string{"/pause"}, nil)
}

// BusyboxImage is a static busybox at /bin/busybox with a symlink per applet
// (as `busybox --list-full` names them) and /bin/sh as its command.
func BusyboxImage(busybox string) (v1.Image, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	l := newLayer()
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "tmp", "etc", "root"} {
		l.dir(d)
	}
	if err := l.file(busybox, "bin/busybox", 0o755); err != nil {
		return nil, err
	}
	for _, a := range strings.Fields(string(out)) {
		if a == "bin/busybox" {
			continue
		}
		l.symlink(a, "/bin/busybox")
	}
	l.content("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644)
	l.content("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
	return l.image(nil, []string{"/bin/sh"})
}

// layer is one image layer being written as a tar stream.
type layer struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	seen map[string]bool
	err  error
}

func newLayer() *layer {
	l := &layer{seen: map[string]bool{}}
	l.tw = tar.NewWriter(&l.buf)
	return l
}

func (l *layer) header(h *tar.Header, body []byte) {
	if l.err != nil || l.seen[h.Name] {
		return
	}
	l.seen[h.Name] = true
	if l.err = l.tw.WriteHeader(h); l.err == nil && body != nil {
		_, l.err = l.tw.Write(body)
	}
}

// parents adds the directories above name.
func (l *layer) parents(name string) {
	d := filepath.Dir(name)
	if d == "." || d == "/" {
		return
	}
	l.dir(d)
}

func (l *layer) dir(name string) {
	l.parents(name)
	l.header(&tar.Header{Name: name + "/", Mode: 0o755, Typeflag: tar.TypeDir}, nil)
}

func (l *layer) content(name, body string, mode int64) {
	l.parents(name)
	l.header(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg}, []byte(body))
}

func (l *layer) file(src, name string, mode int64) error {
	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	l.parents(name)
	l.header(&tar.Header{Name: name, Mode: mode, Size: int64(len(raw)), Typeflag: tar.TypeReg}, raw)
	return l.err
}

func (l *layer) symlink(name, target string) {
	l.parents(name)
	l.header(&tar.Header{Name: name, Linkname: target, Mode: 0o777, Typeflag: tar.TypeSymlink}, nil)
}

// hostPath copies an absolute path of this machine: a regular file as is, a
// symlink as a symlink plus (recursively) its target, a directory with
// everything in it.
func (l *layer) hostPath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("host file %q: not an absolute path", p)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(filepath.Clean(p), "/")
	if l.seen[name] || l.seen[name+"/"] {
		return nil
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		l.symlink(name, target)
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		return l.hostPath(target)
	case fi.IsDir():
		l.dir(name)
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		for _, n := range names {
			if err := l.hostPath(filepath.Join(p, n)); err != nil {
				return err
			}
		}
		return nil
	default:
		return l.file(p, name, int64(fi.Mode().Perm()))
	}
}

func (l *layer) image(entrypoint, cmd []string) (v1.Image, error) {
	if l.err != nil {
		return nil, l.err
	}
	if err := l.tw.Close(); err != nil {
		return nil, err
	}
	raw := l.buf.Bytes()
	lay, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, lay)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{defaultPath}
	return mutate.ConfigFile(img, cf)
}
