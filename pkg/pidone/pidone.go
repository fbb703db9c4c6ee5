// Package pidone lets rewired be the first process of its container's PID
// namespace without taking its delegates down with it.
//
// When PID 1 of a PID namespace dies, the kernel kills every other process
// in it. In the DaemonSet rewired would be that process, so a SIGKILL or an
// OOM kill of rewired would also kill every delegate plugin it was running,
// half-way through an ADD or a DEL. Run makes PID 1 a small supervisor
// instead: it starts the daemon as its child, forwards the signals a
// runtime sends, reaps every process that ends up its child (the delegates
// of a killed daemon are reparented to it), and restarts a daemon that died
// without being asked to stop. The new daemon waits for the delegates of the
// old one to finish (package orphans) before it recovers and serves.
package pidone

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// DisableEnv turns supervision off when set to any value: the daemon then
// runs as PID 1 itself.
const DisableEnv = "REWIRE_NO_INIT"

// Options bound the supervisor's restarts and its wait for orphans.
type Options struct {
	// MaxRestarts daemons that die within Window make the supervisor give
	// up and exit with the last one's status, so that the runtime's own
	// back-off takes over (a daemon failing at start, for instance).
	MaxRestarts int
	Window      time.Duration
	// Drain bounds the wait for the remaining processes (orphaned
	// delegates) once the daemon has stopped for good.
	Drain time.Duration
}

// Defaults are the DaemonSet's: five restarts a minute; the drain fits the
// DaemonSet's termination grace period (30 s).
var Defaults = Options{MaxRestarts: 5, Window: time.Minute, Drain: 20 * time.Second}

// Needed reports whether this process should supervise: it is PID 1 of its
// PID namespace and supervision is not disabled.
func Needed() bool { return os.Getpid() == 1 && os.Getenv(DisableEnv) == "" }

// Run supervises argv (the daemon, as this process was started: its child
// is not PID 1, so it runs the daemon itself) and returns the exit code for
// this process: the daemon's, or 128+signal when it was killed.
func Run(argv []string, opts Options, log *slog.Logger) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	s := &supervisor{argv: argv, opts: opts, log: log, sigs: sigs}
	return s.run()
}

type supervisor struct {
	argv     []string
	opts     Options
	log      *slog.Logger
	sigs     chan os.Signal
	stopping bool
	deaths   []time.Time
}

func (s *supervisor) run() int {
	for {
		pid, err := s.start()
		if err != nil {
			s.log.Error("starting rewired", "err", err)
			return 1
		}
		ws := s.wait(pid)
		code := exitCode(ws)
		if s.stopping || (ws.Exited() && code == 0) {
			s.drain()
			return code
		}
		if !s.again() {
			s.log.Error("rewired keeps dying; leaving the restarts to the container runtime",
				"pid", pid, "status", describe(ws), "deaths", len(s.deaths), "window", s.opts.Window.String())
			s.drain()
			return code
		}
		s.log.Warn("rewired died without being asked to stop; restarting it in place, its running delegates go on",
			"pid", pid, "status", describe(ws))
	}
}

// start launches the daemon with this process's files and environment.
func (s *supervisor) start() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	p, err := os.StartProcess(exe, s.argv, &os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	_ = p.Release() // reaped by wait, with every other child
	return pid, nil
}

// wait reaps children until pid ends, forwarding stop signals to it.
func (s *supervisor) wait(pid int) syscall.WaitStatus {
	for sig := range s.sigs {
		if sig != syscall.SIGCHLD {
			s.stopping = s.stopping || sig != syscall.SIGHUP
			_ = syscall.Kill(pid, sig.(syscall.Signal))
			continue
		}
		if ws, done := reap(pid); done {
			return ws
		}
	}
	panic("unreachable: the signal channel is never closed")
}

// reap collects every child that has ended; done when pid is one of them.
func reap(pid int) (status syscall.WaitStatus, done bool) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if got <= 0 || err != nil {
			return status, done
		}
		if got == pid {
			status, done = ws, true
		}
	}
}

// again records a death and reports whether a restart stays within the
// budget.
func (s *supervisor) again() bool {
	now := time.Now()
	recent := s.deaths[:0]
	for _, t := range s.deaths {
		if now.Sub(t) < s.opts.Window {
			recent = append(recent, t)
		}
	}
	s.deaths = append(recent, now)
	return len(s.deaths) <= s.opts.MaxRestarts
}

// drain waits, bounded by Drain, until this process has no child left:
// delegates a dead daemon left running finish their work instead of being
// killed with the namespace when PID 1 exits.
func (s *supervisor) drain() {
	deadline := time.Now().Add(s.opts.Drain)
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.ECHILD) {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("processes still running when rewired's container stops; they end with it", "waited", s.opts.Drain.String())
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	}
	return "exited with " + strconv.Itoa(ws.ExitStatus())
}
