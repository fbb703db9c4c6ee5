package pidone

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The test binary plays three parts, chosen by environment: PID 1 of a new
// PID namespace (the container's first process), the daemon, and a
// delegate the daemon starts.
const (
	dirEnv      = "PIDONE_TEST_DIR"
	delegateEnv = "PIDONE_TEST_DELEGATE"
)

func TestMain(m *testing.M) {
	dir := os.Getenv(dirEnv)
	switch {
	case dir == "":
		os.Exit(m.Run())
	case os.Getenv(delegateEnv) != "":
		delegate(dir)
	case Needed():
		os.Exit(Run(os.Args, Options{MaxRestarts: 2, Window: time.Minute, Drain: 5 * time.Second},
			slog.New(slog.NewTextHandler(os.Stderr, nil))))
	default:
		daemon(dir)
	}
}

// delegate stands for a plugin half-way through an ADD when its daemon is
// killed: it finishes its work a little later.
func delegate(dir string) {
	must(os.WriteFile(filepath.Join(dir, "delegate-started"), nil, 0o600))
	time.Sleep(300 * time.Millisecond)
	must(os.WriteFile(filepath.Join(dir, "delegate-done"), nil, 0o600))
	os.Exit(0)
}

// daemon starts a delegate on its first run and waits to be SIGKILLed by
// the test (as by the OOM killer); a second run waits for the first one's
// delegate, as rewired waits for orphans, and stops cleanly.
func daemon(dir string) {
	if _, err := os.Stat(filepath.Join(dir, "daemon-1")); err != nil {
		must(os.WriteFile(filepath.Join(dir, "daemon-1"), nil, 0o600))
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), delegateEnv+"=1")
		must(cmd.Start())
		time.Sleep(time.Minute)
		os.Exit(5)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "delegate-done")); err == nil {
			must(os.WriteFile(filepath.Join(dir, "daemon-2"), nil, 0o600))
			os.Exit(0)
		}
	}
	os.Exit(3)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
}

// TestKilledDaemonKeepsItsDelegates runs the daemon as PID 1 of a new PID
// namespace, as in its container, and SIGKILLs it while a delegate runs.
// Supervised, the delegate finishes and the daemon is restarted in place;
// without supervision (the precondition: the test shows what it guards
// against) the kernel kills the delegate with PID 1.
func TestKilledDaemonKeepsItsDelegates(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (a new PID namespace)")
	}
	for _, tc := range []struct {
		name       string
		supervised bool
		stop       bool     // SIGTERM to PID 1 (the runtime stopping the container) instead
		want       []string // files that must exist
		wantCode   int
	}{
		{"supervised", true, false, []string{"daemon-1", "delegate-done", "daemon-2"}, 0},
		{"PID 1 itself", false, false, []string{"daemon-1"}, -1}, // killed: no exit code
		// Stopping is forwarded and not restarted; the delegate finishes
		// before PID 1 exits.
		{"supervised, stopped", true, true, []string{"daemon-1", "delegate-done"}, 128 + int(syscall.SIGTERM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), dirEnv+"="+dir)
			if !tc.supervised {
				cmd.Env = append(cmd.Env, DisableEnv+"=1")
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
			cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill the daemon from outside once its delegate runs.
			waitFile(t, filepath.Join(dir, "delegate-started"))
			daemon := cmd.Process.Pid
			if tc.supervised {
				daemon = onlyChild(t, daemon)
			}
			sig := syscall.SIGKILL
			if tc.stop {
				daemon, sig = cmd.Process.Pid, syscall.SIGTERM
			}
			if err := syscall.Kill(daemon, sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatal(err)
			}
			if got := cmd.ProcessState.ExitCode(); got != tc.wantCode {
				t.Errorf("exit code %d, want %d", got, tc.wantCode)
			}
			for _, f := range tc.want {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Errorf("%s missing", f)
				}
			}
			if !tc.supervised {
				if _, err := os.Stat(filepath.Join(dir, "delegate-done")); err == nil {
					t.Error("the delegate finished although PID 1 died: the precondition does not hold")
				}
			}
			if tc.stop {
				if _, err := os.Stat(filepath.Join(dir, "daemon-2")); err == nil {
					t.Error("a daemon stopped by the runtime was restarted")
				}
			}
		})
	}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear", path)
}

// onlyChild is the one child of pid (the supervised daemon), forked by
// any of its threads.
func onlyChild(t *testing.T, pid int) int {
	t.Helper()
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var all string
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		all += string(raw)
	}
	var child int
	if n, _ := fmt.Sscan(all, &child); n != 1 {
		t.Fatalf("children of %d: %q", pid, all)
	}
	return child
}
