// Command rewire is the CNI plugin the container runtime executes. It is
// deliberately thin: it forwards the request to the rewired node daemon over
// a root-only unix socket and prints the daemon's answer.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rewire-cni/rewire/pkg/version"
	"github.com/rewire-cni/rewire/pkg/wire"
)

// supportedVersions are the CNI spec versions Rewire speaks.
var supportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// errForbidden is the daemon refusing the caller's uid.
var errForbidden = errors.New("daemon answered 403")

// connectWait bounds how long the plugin waits for a daemon that is down or
// restarting before it answers "try again later".
const connectWait = 5 * time.Second

// netConf is the part of Rewire's own network config the plugin reads.
type netConf struct {
	CNIVersion string `json:"cniVersion"`
	SocketPath string `json:"socketPath"`
}

func main() {
	out, code := run(os.Getenv, os.Stdin, os.Stderr)
	os.Stdout.Write(out)
	os.Exit(code)
}

// run serves one invocation: the answer for stdout and the exit code. Run
// by hand (no CNI_COMMAND), it says on stderr what it is, as the reference
// plugins do, without reading stdin.
func run(getenv func(string) string, stdin io.Reader, stderr io.Writer) ([]byte, int) {
	cmd := getenv("CNI_COMMAND")
	switch cmd {
	case "VERSION":
		b, _ := json.Marshal(map[string]interface{}{"cniVersion": "1.1.0", "supportedVersions": supportedVersions})
		return b, 0
	case "":
		fmt.Fprintf(stderr, "CNI rewire plugin %s\nCNI protocol versions supported: %s\n",
			version.String(), strings.Join(supportedVersions, ", "))
		return nil, 0
	}
	config, err := io.ReadAll(stdin)
	if err != nil {
		return cniError("1.1.0", 5, "reading stdin", err.Error()), 1
	}
	var conf netConf
	if err := json.Unmarshal(config, &conf); err != nil {
		return cniError("1.1.0", 6, "decoding network config", err.Error()), 1
	}
	if conf.SocketPath == "" {
		conf.SocketPath = wire.DefaultSocket
	}
	req := wire.Request{
		Command: cmd, ContainerID: getenv("CNI_CONTAINERID"), NetNS: getenv("CNI_NETNS"),
		IfName: getenv("CNI_IFNAME"), Args: getenv("CNI_ARGS"), Path: getenv("CNI_PATH"), Config: config,
	}
	resp, err := post(conf.SocketPath, &req)
	if errors.Is(err, syscall.EACCES) || errors.Is(err, errForbidden) {
		return cniError(conf.CNIVersion, 999, "permission denied by rewired: the plugin must run as root", err.Error()), 1
	}
	if err != nil && cmd == "DEL" && !exists(conf.SocketPath) {
		if out, code, ok := runOffline(config); ok {
			return out, code
		}
	}
	if err != nil {
		return cniError(conf.CNIVersion, 11, "try again later: rewired is not reachable", err.Error()), 1
	}
	return resp.Stdout, resp.ExitCode
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// runOffline runs rewired's copy next to this plugin (rewire-offline) for a
// DEL while no daemon listens (Rewire uninstalled from the node, or not
// started): it deletes the sandbox's attachments from the on-disk store, so
// that pods stay deletable. ok is false when there is no such copy.
func runOffline(config []byte) (out []byte, code int, ok bool) {
	self, err := os.Executable()
	if err != nil {
		return nil, 0, false
	}
	bin := filepath.Join(filepath.Dir(self), "rewire-offline")
	if !exists(bin) {
		return nil, 0, false
	}
	cmd := exec.Command(bin)
	cmd.Stdin, cmd.Stderr = bytes.NewReader(config), os.Stderr
	out, err = cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out, exit.ExitCode(), true
	}
	if err != nil {
		return nil, 0, false
	}
	return out, 0, true
}

// post sends the request as one HTTP/1.1 POST over the unix socket and
// reads the reply. It speaks the few lines of HTTP it needs itself: net/http
// would add a third to the binary and to its start-up, which the runtime
// pays on every pod.
func post(socket string, req *wire.Request) (*wire.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	conn, err := dialWithRetry(socket)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: rewired\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		wire.Path, len(body))
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		return nil, fmt.Errorf("sending request: %w", err)
	}
	status, payload, err := readReply(bufio.NewReader(conn))
	if err != nil {
		return nil, err
	}
	if status == "403" {
		return nil, fmt.Errorf("%w: %s", errForbidden, bytes.TrimSpace(payload))
	}
	if status != "200" {
		return nil, fmt.Errorf("daemon answered %s: %s", status, bytes.TrimSpace(payload))
	}
	var resp wire.Response
	if err := json.Unmarshal(payload, &resp); err != nil {
		return nil, fmt.Errorf("decoding daemon reply: %w", err)
	}
	return &resp, nil
}

// readReply reads an HTTP/1.1 response: the status code and the body of
// Content-Length bytes (or up to EOF, the connection being closed).
func readReply(r *bufio.Reader) (string, []byte, error) {
	tp := textproto.NewReader(r)
	line, err := tp.ReadLine()
	if err != nil {
		return "", nil, fmt.Errorf("reading reply: %w", err)
	}
	_, rest, _ := strings.Cut(line, " ")
	status, _, _ := strings.Cut(rest, " ")
	header, err := tp.ReadMIMEHeader()
	if err != nil {
		return "", nil, fmt.Errorf("reading reply header: %w", err)
	}
	if n, err := strconv.Atoi(header.Get("Content-Length")); err == nil {
		payload := make([]byte, n)
		_, err = io.ReadFull(r, payload)
		return status, payload, err
	}
	if header.Get("Transfer-Encoding") != "" {
		return "", nil, fmt.Errorf("unsupported reply encoding %q", header.Get("Transfer-Encoding"))
	}
	payload, err := io.ReadAll(io.LimitReader(r, 16<<20))
	return status, payload, err
}

// dialWithRetry connects to the daemon socket, retrying while the daemon is
// starting (socket missing or refusing) for at most connectWait.
func dialWithRetry(socket string) (net.Conn, error) {
	deadline := time.Now().Add(connectWait)
	delay := 50 * time.Millisecond
	for {
		conn, err := net.Dial("unix", socket)
		if err == nil || !transient(err) || time.Now().Add(delay).After(deadline) {
			return conn, err
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// transient tells a daemon that is (re)starting (no socket yet, nobody
// listening) from a permanent refusal such as permission denied.
func transient(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

func cniError(version string, code int, msg, details string) []byte {
	if version == "" {
		version = "1.1.0"
	}
	b, _ := json.Marshal(map[string]interface{}{"cniVersion": version, "code": code, "msg": msg, "details": details})
	return b
}
