package harness

import (
	"os"
	"os/exec"
	"path/filepath"
)

// BuildPlugin builds the CNI plugin into dir as make build does
// (hack/build-plugin.sh: rewire in C, the Go plugin as rewire-plugin), from
// the repository at root, with the go build flags given.
func BuildPlugin(root, dir string, goFlags ...string) error {
	cmd := exec.Command(filepath.Join(root, "hack", "build-plugin.sh"), append([]string{dir}, goFlags...)...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
	return cmd.Run()
}
