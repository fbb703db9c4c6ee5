// Command slowplugin is a CNI plugin for the end-to-end tests that stands
// for a delegate half-way through its ADD. Installed as slow<type> next to
// the plugin <type>, on ADD it writes <dir>/<container>.started, waits one
// second, runs <type> with the same input and environment, and writes
// <dir>/<container>.done with <type>'s exit code before passing on its
// output. Other commands run <type> at once. dir is MarkDir (the node's
// /var/lib/cni, which rewired's container mounts at the same path).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// MarkDir holds the markers.
const MarkDir = "/var/lib/cni/rewire-e2e-slow"

func main() {
	self := filepath.Base(os.Args[0])
	real := filepath.Join(filepath.Dir(os.Args[0]), strings.TrimPrefix(self, "slow"))
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	add := os.Getenv("CNI_COMMAND") == "ADD"
	mark := filepath.Join(MarkDir, os.Getenv("CNI_CONTAINERID"))
	if add {
		if err := os.MkdirAll(MarkDir, 0o755); err != nil {
			fail(err)
		}
		if err := os.WriteFile(mark+".started", nil, 0o644); err != nil {
			fail(err)
		}
		time.Sleep(time.Second)
	}
	cmd := exec.Command(real)
	cmd.Stdin, cmd.Stderr = bytes.NewReader(in), os.Stderr
	out, err := cmd.Output()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		fail(err)
	}
	if add {
		_ = os.WriteFile(mark+".done", []byte(fmt.Sprint(code)), 0o644)
	}
	_, _ = os.Stdout.Write(out)
	os.Exit(code)
}

func fail(err error) {
	fmt.Printf(`{"cniVersion":"0.3.1","code":999,"msg":%q}`, "slowplugin: "+err.Error())
	os.Exit(1)
}
