package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/wire"
)

type peerKey struct{}

// maxRequest bounds a request body (a CNI config is a few KiB).
const maxRequest = 1 << 20

// Listen creates the daemon socket: its directory 0700 and the socket 0600,
// both owned by the daemon's user (root in production). A stale socket from
// an earlier run is replaced.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Server returns the HTTP server of the daemon socket: POST /cni and
// /cni/raw, GET
// /healthz, /readyz, /metrics, /debug/api and /debug/pods/NS/NAME. Connections from a uid other than the daemon's own
// are refused.
func (d *Daemon) Server() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+wire.Path, d.serveCNI)
	mux.HandleFunc("POST "+wire.RawPath, d.serveCNIRaw)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", d.serveReady)
	mux.HandleFunc("GET /metrics", d.serveMetrics)
	mux.HandleFunc("GET /debug/pods/{namespace}/{name}", d.servePodView)
	mux.HandleFunc("GET /debug/api", func(w http.ResponseWriter, _ *http.Request) {
		var counts map[string]int64
		if d.APICounts != nil {
			counts = d.APICounts()
		}
		_ = json.NewEncoder(w).Encode(counts)
	})
	if os.Getenv(ProfileEnv) == "1" {
		serveProfile(mux)
	}
	return &http.Server{
		Handler: onlyOwner(mux),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerUID(c))
		},
	}
}

// ProfileEnv, set to 1 in rewired's environment, adds POST
// /debug/cpuprofile/start and /debug/cpuprofile/stop (which answers the
// pprof CPU profile of the time in between) to the socket: benchmarks
// profile the daemon over exactly their measured loop.
const ProfileEnv = "REWIRE_DEBUG_CPUPROFILE"

func serveProfile(mux *http.ServeMux) {
	var mu sync.Mutex
	var buf *bytes.Buffer
	mux.HandleFunc("POST /debug/cpuprofile/start", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		b := &bytes.Buffer{}
		if err := pprof.StartCPUProfile(b); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		buf = b
	})
	mux.HandleFunc("POST /debug/cpuprofile/stop", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if buf == nil {
			http.Error(w, "not profiling", http.StatusConflict)
			return
		}
		pprof.StopCPUProfile()
		_, _ = w.Write(buf.Bytes())
		buf = nil
	})
}

func onlyOwner(next http.Handler) http.Handler {
	own := os.Geteuid()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if uid, _ := r.Context().Value(peerKey{}).(int); uid != own {
			http.Error(w, "permission denied", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// peerUID returns the uid of the process at the other end of a unix socket,
// or -1 when it cannot be told.
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	_ = raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

// serveReady answers 200 once ADD can be served (the cluster network exists).
func (d *Daemon) serveReady(w http.ResponseWriter, _ *http.Request) {
	if err := d.Ready(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// servePodView answers the daemon's view of one pod (404 when its cache
// does not have it).
func (d *Daemon) servePodView(w http.ResponseWriter, r *http.Request) {
	var v PodView
	ok := false
	if d.View != nil {
		v, ok = d.View(r.PathValue("namespace"), r.PathValue("name"))
	}
	if !ok {
		http.Error(w, "pod not in the daemon's cache", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// serveMetrics writes the Prometheus metrics.
func (d *Daemon) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	if n, err := d.Exec.Records(); err == nil {
		metrics.StoreRecords.Set(float64(n))
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if err := metrics.Write(w); err != nil && d.Log != nil {
		d.Log.Warn("metrics partly written", "err", err)
	}
}

// MetricsServer serves /metrics, /healthz and /readyz over TCP for
// Prometheus and the kubelet's probes; nothing else is exposed there.
func (d *Daemon) MetricsServer(addr string) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", d.serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", d.serveReady)
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

func (d *Daemon) serveCNI(w http.ResponseWriter, r *http.Request) {
	var req wire.Request
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequest)).Decode(&req); err != nil {
		http.Error(w, "decoding request: "+err.Error(), http.StatusBadRequest)
		return
	}
	out, err := json.Marshal(d.Handle(r.Context(), &req))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
}

// serveCNIRaw serves a request in the C plugin's form (wire.RawPath).
func (d *Daemon) serveCNIRaw(w http.ResponseWriter, r *http.Request) {
	config, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
	if err == nil && len(config) > maxRequest {
		err = fmt.Errorf("network config larger than %d bytes", maxRequest)
	}
	if err != nil {
		http.Error(w, "reading request: "+err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	resp := d.Handle(r.Context(), &wire.Request{
		Command: q.Get("command"), ContainerID: q.Get("containerID"), NetNS: q.Get("netns"),
		IfName: q.Get("ifName"), Args: q.Get("args"), Path: q.Get("path"), Config: config,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(wire.ExitCodeHeader, strconv.Itoa(resp.ExitCode))
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Stdout)))
	_, _ = w.Write(resp.Stdout)
}
