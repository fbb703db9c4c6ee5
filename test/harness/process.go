package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// process is a started command whose single Wait runs in the background.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	// target receives the signals when set (startContained's PID 1).
	target int
}

// startContained starts args[0] as PID 1 of a new PID namespace with its
// own /proc (unshare(1), from util-linux), as a container's first process;
// mounts of the host (network namespaces made later) still reach it.
// Signals go to that PID 1: unshare itself ignores SIGTERM.
func startContained(logFile string, args ...string) (*process, error) {
	p, err := startProcess(logFile, append([]string{"unshare", "--pid", "--fork", "--mount-proc", "--propagation", "slave",
		"--kill-child"}, args...)...)
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(5 * time.Second); p.target == 0; time.Sleep(5 * time.Millisecond) {
		if p.target, err = onlyChild(p.cmd.Process.Pid); err != nil && time.Now().After(deadline) {
			p.kill()
			return nil, err
		}
	}
	return p, nil
}

// onlyChild returns the one child of pid, forked by any of its threads.
func onlyChild(pid int) (int, error) {
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil {
		return 0, err
	}
	var all string
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		all += string(raw)
	}
	var child int
	if n, _ := fmt.Sscan(all, &child); n != 1 {
		return 0, fmt.Errorf("process %d has no child (children %q)", pid, all)
	}
	return child, nil
}

// startProcess starts args[0] with its output appended to logFile.
func startProcess(logFile string, args ...string) (*process, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	p := &process{cmd: exec.Command(args[0], args[1:]...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", args[0], err)
	}
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to 10 s, then kills.
func (p *process) stop() {
	if p == nil {
		return
	}
	_ = syscall.Kill(p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// kill sends SIGKILL (a crash) and waits until the process is gone.
func (p *process) kill() {
	if p == nil {
		return
	}
	_ = syscall.Kill(p.pid(), syscall.SIGKILL)
	<-p.done
}

// pid is the process signals go to.
func (p *process) pid() int {
	if p.target != 0 {
		return p.target
	}
	return p.cmd.Process.Pid
}
