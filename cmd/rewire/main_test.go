package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The plugin answers VERSION itself and, run by hand without CNI_COMMAND,
// says what it is on stderr and exits 0 (as the reference plugins do).
func TestRunWithoutDaemon(t *testing.T) {
	for _, c := range []struct {
		name, command    string
		wantOut, wantErr string
	}{
		{"VERSION", "VERSION", `{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`, ""},
		{"no CNI_COMMAND", "", "", "CNI rewire plugin dev\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"CNI_COMMAND": c.command}
			var stderr bytes.Buffer
			out, code := run(func(k string) string { return env[k] }, strings.NewReader(""), &stderr)
			if code != 0 || string(out) != c.wantOut || stderr.String() != c.wantErr {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 0, %q, %q", code, out, stderr.String(), c.wantOut, c.wantErr)
			}
			if c.command == "VERSION" {
				var v struct{ SupportedVersions []string }
				if err := json.Unmarshal(out, &v); err != nil || !slices.Equal(v.SupportedVersions, supportedVersions) {
					t.Fatalf("VERSION answer %s: %v", out, err)
				}
			}
		})
	}
}

// The built plugin, run by hand with nothing set, prints its version (the
// one given at link time) and the CNI versions it speaks, exits 0 and does
// not wait for stdin (a terminal here: a pipe that never ends).
func TestAbout(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "rewire")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X github.com/rewire-cni/rewire/pkg/version.Version=v9.8.7-test", ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	cmd := exec.Command(bin)
	var stdout, stderr bytes.Buffer
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = []string{}, stdinR, &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdinR.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the plugin waits for stdin when run without CNI_COMMAND")
	}
	if err != nil {
		t.Fatalf("exit: %v (stderr %q), want 0", err, stderr.String())
	}
	want := "CNI rewire plugin v9.8.7-test\nCNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"
	if stdout.Len() != 0 || stderr.String() != want {
		t.Fatalf("stdout %q, stderr %q; want nothing and %q", stdout.String(), stderr.String(), want)
	}
}
