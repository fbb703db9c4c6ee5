package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildRewire builds rewired, kubectl-rewire and the CNI plugin into dir
// from the repository at root (with -race when race: the daemon's data
// races then fail the tests that read its log), and links rewire-offline,
// rewired's copy the plugin runs for a DEL while no daemon listens.
func BuildRewire(root, dir string, race bool) error {
	flags := []string{"-trimpath", "-ldflags", "-s -w"}
	if race {
		flags = append(flags, "-race")
	}
	build := exec.Command("go", append(append([]string{"build", "-o", dir + "/"}, flags...), "./cmd/rewired", "./cmd/kubectl-rewire")...)
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building rewire: %w", err)
	}
	if err := BuildPlugin(root, dir, flags...); err != nil {
		return fmt.Errorf("building the plugin: %w", err)
	}
	return os.Symlink("rewired", filepath.Join(dir, "rewire-offline"))
}

// BuildPlugin builds the CNI plugin into dir as make build does
// (hack/build-plugin.sh: rewire in C, the Go plugin as rewire-plugin), from
// the repository at root, with the go build flags given.
func BuildPlugin(root, dir string, goFlags ...string) error {
	cmd := exec.Command(filepath.Join(root, "hack", "build-plugin.sh"), append([]string{dir}, goFlags...)...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
	return cmd.Run()
}
