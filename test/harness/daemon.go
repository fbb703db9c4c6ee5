package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rewire-cni/rewire/pkg/daemon"
)

// Daemon is a rewired process.
type Daemon struct {
	Bin, Dir, Socket, StateDir, ConfigFile, Kubeconfig, Node string
	ExtraArgs                                                []string
	// PIDNamespace starts rewired as PID 1 of a PID namespace of its own,
	// as in its DaemonSet's container (it then supervises the daemon as
	// its child: package pidone).
	PIDNamespace bool
	// Cgroup, when set, is the cgroup rewired starts in (and so its
	// delegates).
	Cgroup *MemoryCgroup
	// In, when set, runs rewired in a node's namespaces (Node.Command).
	In func(argv ...string) []string

	proc *process
}

// NewDaemon prepares (does not start) a daemon with its config (YAML) and
// all its files under dir. Self-GC is off unless the config sets criSocket
// (WithoutSelfGC).
func NewDaemon(bin, dir, kubeconfig, node, config string) (*Daemon, error) {
	d := &Daemon{
		Bin: bin, Dir: dir, Kubeconfig: kubeconfig, Node: node,
		Socket:     filepath.Join(dir, "run", "rewire.sock"),
		StateDir:   filepath.Join(dir, "state"),
		ConfigFile: filepath.Join(dir, "config.yaml"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return d, os.WriteFile(d.ConfigFile, []byte(WithoutSelfGC(config)), 0o600)
}

// WithoutSelfGC turns self-GC off in a daemon config (YAML, or a JSON
// object) that does not set criSocket: a test's sandboxes are not the
// host's container runtime's, which self-GC would otherwise ask (and
// release every record it does not list).
func WithoutSelfGC(config string) string {
	if strings.Contains(config, "criSocket") {
		return config
	}
	if rest, ok := strings.CutPrefix(strings.TrimSpace(config), "{"); ok {
		if strings.HasPrefix(strings.TrimSpace(rest), "}") {
			return `{"criSocket":"off"` + rest
		}
		return `{"criSocket":"off",` + rest
	}
	return config + "\ncriSocket: \"off\"\n"
}

// Start launches the daemon and waits until its socket answers /healthz.
func (d *Daemon) Start() error {
	args := append([]string{"--kubeconfig", d.Kubeconfig, "--node-name", d.Node, "--socket-path", d.Socket,
		"--state-dir", d.StateDir, "--config", d.ConfigFile, "--log-level", "debug"}, d.ExtraArgs...)
	var err error
	start := startProcess
	if d.PIDNamespace {
		start = startContained
	}
	argv := append([]string{d.Bin}, args...)
	if d.Cgroup != nil {
		argv = d.Cgroup.Command(argv...)
	}
	if d.In != nil {
		argv = d.In(argv...)
	}
	if d.proc, err = start(filepath.Join(d.Dir, "rewired.log"), argv...); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if code, _, err := d.Get("/healthz"); err == nil && code == http.StatusOK {
			return nil
		}
		if d.proc.exited() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("rewired did not come up; log:\n%s", d.Log())
}

// WaitReady waits until /readyz answers 200.
func (d *Daemon) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		code, body, err := d.Get("/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rewired not ready: %d %s %v", code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Supervised returns the PID of the daemon that rewired, started as PID 1
// of its own PID namespace, runs as its child.
func (d *Daemon) Supervised() (int, error) { return onlyChild(d.proc.pid()) }

// Running reports whether the daemon process is alive.
func (d *Daemon) Running() bool { return d.proc != nil && !d.proc.exited() }

// Stop sends SIGTERM and waits.
func (d *Daemon) Stop() { d.proc.stop() }

// Kill sends SIGKILL (a crash) and waits for the process to be gone.
func (d *Daemon) Kill() { d.proc.kill() }

// Log returns the daemon's log so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "rewired.log"))
	return string(b)
}

// Get requests a path on the daemon socket.
func (d *Daemon) Get(path string) (int, string, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.Socket)
		},
	}}
	resp, err := hc.Get("http://rewired" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// Post posts an empty body to a path on the daemon socket and returns
// the answer's body.
func (d *Daemon) Post(path string) ([]byte, error) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.Socket)
		},
	}}
	resp, err := hc.Post("http://rewired"+path, "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	return b, err
}

// Counters returns the daemon's API request counters (/debug/api).
func (d *Daemon) Counters() (map[string]int64, error) {
	code, body, err := d.Get("/debug/api")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/debug/api: %d %s", code, body)
	}
	out := map[string]int64{}
	return out, json.Unmarshal([]byte(body), &out)
}

// PodView returns the daemon's view of a pod (GET /debug/pods/NS/NAME):
// false when its pod cache does not have the pod.
func (d *Daemon) PodView(namespace, name string) (daemon.PodView, bool, error) {
	var v daemon.PodView
	code, body, err := d.Get("/debug/pods/" + namespace + "/" + name)
	switch {
	case err != nil:
		return v, false, err
	case code == http.StatusNotFound:
		return v, false, nil
	case code != http.StatusOK:
		return v, false, fmt.Errorf("/debug/pods/%s/%s: %d %s", namespace, name, code, body)
	}
	return v, true, json.Unmarshal([]byte(body), &v)
}

// Metric returns the value of one series of the daemon's metrics, named as
// the text format writes it (`rewire_reconciles_total{operation="plug",result="ok"}`);
// 0 when the daemon has not written that series yet.
func (d *Daemon) Metric(series string) (float64, error) {
	code, body, err := d.Get("/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}

// CPU returns the CPU time (user + system) the daemon has used so far.
func (d *Daemon) CPU() time.Duration { return d.cpu(11) }

// ChildrenCPU returns the CPU time (user + system) of the daemon's children
// that have exited and been waited for so far: the delegate plugins it ran.
func (d *Daemon) ChildrenCPU() time.Duration { return d.cpu(13) }

// cpu sums two /proc/<pid>/stat fields from the field after the command:
// 11 and 12 are utime and stime, 13 and 14 cutime and cstime, in clock
// ticks (100 per second on Linux).
func (d *Daemon) cpu(from int) time.Duration {
	if d.proc == nil {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.proc.pid()))
	if err != nil {
		return 0
	}
	// The command may contain spaces: fields start after its ')'.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(fields) < from+2 {
		return 0
	}
	var ticks int64
	for _, f := range fields[from : from+2] {
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// RSS returns the daemon's resident set size in bytes (0 if unknown).
func (d *Daemon) RSS() int64 { return d.procStatus("VmRSS:") }

// PeakRSS returns the daemon's peak resident set size in bytes.
func (d *Daemon) PeakRSS() int64 { return d.procStatus("VmHWM:") }

func (d *Daemon) procStatus(key string) int64 {
	if d.proc == nil {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.proc.pid()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// PID is the daemon process's PID (with PIDNamespace, the supervisor's).
func (d *Daemon) PID() int { return d.proc.pid() }
