// Package memlimit finds the memory limit of the cgroup a process runs in
// and derives from it how many delegate plugins rewired lets run at once.
// Delegates are child processes of rewired, so their memory counts against
// rewired's container limit: a burst of pod ADDs that started one plugin
// (and its IPAM plugin) per attachment at once would take the container
// past its limit and have it OOM-killed.
package memlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	// Reserve is the memory kept for rewired itself (RSS 21–38 MiB
	// measured at rest and during bursts of 150 pods, with room).
	Reserve = 64 << 20
	// PerDelegate is the memory one running delegate takes in the cgroup:
	// the plugin process and what it runs (its IPAM plugin, iptables).
	// Measured in a 300-pod burst on the e2e node: at most ~15 MiB per
	// running delegate (README); 24 leaves room for heavier plugins.
	PerDelegate = 24 << 20
	// MinSlots is the fewest delegate slots a limit yields.
	MinSlots = 2
)

// Slots is the number of delegates that may run at once within limit
// bytes: what is left after Reserve, PerDelegate each, at least MinSlots.
func Slots(limit int64) int {
	return max(MinSlots, int((limit-Reserve)/PerDelegate))
}

// Own returns the memory limit of the calling process's cgroup (ok false:
// none). root is the cgroup filesystem's mount point ("/sys/fs/cgroup");
// procCgroup is the content of /proc/self/cgroup.
func Own(root string, procCgroup []byte) (limit int64, ok bool, err error) {
	for _, file := range candidates(root, procCgroup) {
		raw, err := os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("reading %s: %w", file, err)
		}
		return parseLimit(file, raw)
	}
	return 0, false, nil
}

// OwnFromProc is Own for the running process.
func OwnFromProc() (int64, bool, error) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false, err
	}
	return Own("/sys/fs/cgroup", raw)
}

// candidates lists the limit files to try, the process's own cgroup first,
// then the root of the mount (a container whose cgroup is mounted as the
// root, with or without a cgroup namespace). cgroup v1's memory controller
// wins over the v2 line of a hybrid host.
func candidates(root string, procCgroup []byte) []string {
	var v1, v2 []string
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = []string{filepath.Join(root, parts[2], "memory.max"), filepath.Join(root, "memory.max")}
		case hasController(parts[1], "memory"):
			dir := filepath.Join(root, "memory")
			v1 = []string{filepath.Join(dir, parts[2], "memory.limit_in_bytes"), filepath.Join(dir, "memory.limit_in_bytes")}
		}
	}
	if len(v1) > 0 {
		return v1
	}
	return v2
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// unlimited: cgroup v1 reports no limit as a page-rounded maximum int64.
const unlimited = int64(1) << 60

func parseLimit(file string, raw []byte) (int64, bool, error) {
	s := strings.TrimSpace(string(raw))
	if s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %q is not a memory limit", file, s)
	}
	if n >= unlimited {
		return 0, false, nil
	}
	return n, true, nil
}
