package krewcheck

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/krew/pkg/index"
	"sigs.k8s.io/yaml"
)

// made is the directory the test made with hack/dist.sh, removed at the end.
var made string

// dist is the directory make dist wrote, made once per test binary.
var dist = sync.OnceValues(func() (string, error) {
	if d := os.Getenv("REWIRE_DIST_DIR"); d != "" {
		return d, nil
	}
	d, err := os.MkdirTemp("", "rewire-dist-")
	if err != nil {
		return "", err
	}
	made = d
	cmd := exec.Command("../../hack/dist.sh")
	cmd.Env = append(os.Environ(), "DIST_DIR="+d, "DIST_SKIP_CHECK=1", "VERSION=v0.0.1-krewcheck",
		"DIST_PLATFORMS=linux/amd64 linux/arm64", "DIST_URI_BASE=https://example.com/rewire/v0.0.1-krewcheck")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("hack/dist.sh: %w\n%s", err, out)
	}
	return d, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if made != "" {
		os.RemoveAll(made)
	}
	os.Exit(code)
}

// krewTool builds one of krew's commands (at the version go.mod pins).
func krewTool(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), path.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func distFiles(t *testing.T) (dir, manifest string, plugin index.Plugin) {
	t.Helper()
	dir, err := dist()
	if err != nil {
		t.Fatal(err)
	}
	manifest = filepath.Join(dir, "plugins", "rewire.yaml")
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &plugin); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	return dir, manifest, plugin
}

// krew's own manifest validation (what the krew-index CI runs): the
// structure (apiVersion, name, semver version, sha256 form, selectors,
// files), every platform selecting a platform krew knows, no two platforms
// selecting the same.
func TestManifestValidates(t *testing.T) {
	_, manifest, _ := distFiles(t)
	validate := krewTool(t, "sigs.k8s.io/krew/cmd/validate-krew-manifest")
	out, err := exec.Command(validate, "-manifest", manifest, "-skip-install").CombinedOutput()
	if err != nil {
		t.Fatalf("validate-krew-manifest: %v\n%s", err, out)
	}
}

// Each platform's URI names an archive make dist wrote, its sha256 is that
// archive's and the one in checksums.txt, and the archive holds the plugin
// (executable) and the license, nothing else.
func TestManifestMatchesArchives(t *testing.T) {
	dir, _, p := distFiles(t)
	sums := readChecksums(t, filepath.Join(dir, "checksums.txt"))
	archives, _ := filepath.Glob(filepath.Join(dir, "kubectl-rewire_*.tar.gz"))
	if len(p.Spec.Platforms) == 0 || len(p.Spec.Platforms) != len(archives) || len(sums) != len(archives) {
		t.Fatalf("%d platforms, %d archives, %d checksums", len(p.Spec.Platforms), len(archives), len(sums))
	}
	for _, pl := range p.Spec.Platforms {
		os, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		t.Run(os+"/"+arch, func(t *testing.T) {
			name := fmt.Sprintf("kubectl-rewire_%s_%s_%s.tar.gz", p.Spec.Version, os, arch)
			if path.Base(pl.URI) != name {
				t.Errorf("uri %s, want it to name %s", pl.URI, name)
			}
			sum := fileSHA256(t, filepath.Join(dir, name))
			if pl.Sha256 != sum || sums[name] != sum {
				t.Errorf("sha256: manifest %s, checksums.txt %s, archive %s", pl.Sha256, sums[name], sum)
			}
			if pl.Bin != "kubectl-rewire" {
				t.Errorf("bin %q", pl.Bin)
			}
			got := archiveEntries(t, filepath.Join(dir, name))
			want := []string{"LICENSE -rw-r--r--", "kubectl-rewire -rwxr-xr-x"}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("archive holds %v, want %v", got, want)
			}
		})
	}
}

// krew installs every platform from its archive (checking the sha256 and
// the files the manifest moves), the license among the installed files;
// the host's plugin, run through krew's bin link, reports the version.
func TestKrewInstalls(t *testing.T) {
	dir, manifest, p := distFiles(t)
	krew := krewTool(t, "sigs.k8s.io/krew/cmd/krew")
	for _, pl := range p.Spec.Platforms {
		goos, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		t.Run(goos+"/"+arch, func(t *testing.T) {
			root := t.TempDir()
			archive := filepath.Join(dir, path.Base(pl.URI))
			cmd := exec.Command(krew, "install", "--manifest", manifest, "--archive", archive)
			cmd.Env = []string{"KREW_ROOT=" + root, "KREW_OS=" + goos, "KREW_ARCH=" + arch, "HOME=" + root, "PATH=" + os.Getenv("PATH")}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("kubectl krew install: %v\n%s", err, out)
			}
			installed := filepath.Join(root, "store", "rewire", p.Spec.Version)
			for _, f := range []string{"LICENSE", "kubectl-rewire"} {
				if _, err := os.Stat(filepath.Join(installed, f)); err != nil {
					t.Errorf("installed plugin lacks %s: %v", f, err)
				}
			}
			if goos != runtime.GOOS || arch != runtime.GOARCH {
				return
			}
			out, err := exec.Command(filepath.Join(root, "bin", "kubectl-rewire"), "version").CombinedOutput()
			if want := "kubectl-rewire " + p.Spec.Version + "\n"; err != nil || string(out) != want {
				t.Errorf("kubectl-rewire version: %q, %v; want %q", out, err, want)
			}
		})
	}
}

func readChecksums(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("checksums.txt line %q is not sha256sum's", sc.Text())
		}
		sums[name] = sum
	}
	return sums
}

func fileSHA256(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// archiveEntries lists "name mode" of a .tar.gz's entries, sorted.
func archiveEntries(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name+" "+h.FileInfo().Mode().String())
	}
	sort.Strings(out)
	return out
}
