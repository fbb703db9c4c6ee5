package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MemoryCgroup is a cgroup with a memory limit for a test's processes
// (cgroup v1's memory controller when the host has it, else v2).
type MemoryCgroup struct {
	// Dir is the cgroup's directory.
	Dir string
}

// NewMemoryCgroup creates the cgroup name with a memory limit of limit
// bytes. It fails when the host has no memory controller to use.
func NewMemoryCgroup(name string, limit int64) (*MemoryCgroup, error) {
	v1 := "/sys/fs/cgroup/memory"
	dir, file := filepath.Join(v1, name), "memory.limit_in_bytes"
	if _, err := os.Stat(v1); err != nil {
		ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
		if err != nil || !strings.Contains(string(ctl), "memory") {
			return nil, fmt.Errorf("no cgroup memory controller (v1 %s or v2 subtree_control): %v", v1, err)
		}
		dir, file = filepath.Join("/sys/fs/cgroup", name), "memory.max"
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		return nil, errors.Join(fmt.Errorf("setting %s: %w", file, err), os.Remove(dir))
	}
	return &MemoryCgroup{Dir: dir}, nil
}

// Procs lists the processes in the cgroup.
func (c *MemoryCgroup) Procs() ([]int, error) {
	raw, err := os.ReadFile(filepath.Join(c.Dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(raw)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, pid)
	}
	return out, nil
}

// OOMKills is the number of processes the kernel killed for the cgroup's
// limit (v2's memory.events oom_kill; v1's memory.oom_control).
func (c *MemoryCgroup) OOMKills() (int, error) {
	for _, f := range []string{"memory.events", "memory.oom_control"} {
		raw, err := os.ReadFile(filepath.Join(c.Dir, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				return strconv.Atoi(strings.TrimSpace(v))
			}
		}
		return 0, fmt.Errorf("%s has no oom_kill count", f)
	}
	return 0, errors.New("no memory.events or memory.oom_control")
}

// Remove deletes the cgroup (its processes must have exited).
func (c *MemoryCgroup) Remove() error { return os.Remove(c.Dir) }

// Command returns args wrapped so that the process joins the cgroup
// before it starts (it inherits the limit from its first instruction).
func (c *MemoryCgroup) Command(args ...string) []string {
	return append([]string{"sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, c.Dir}, args...)
}

// ParentPID reads a process's parent from /proc.
func ParentPID(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return strconv.Atoi(f[1])
}
