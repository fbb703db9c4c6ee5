// Command rewire is the CNI plugin the container runtime executes. It is
// deliberately thin: it forwards the request to the rewired node daemon over
// a root-only unix socket and prints the daemon's answer.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/rewire-cni/rewire/pkg/wire"
)

// supportedVersions are the CNI spec versions Rewire speaks.
const supportedVersions = `["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]`

// connectWait bounds how long the plugin waits for a daemon that is down or
// restarting before it answers "try again later".
const connectWait = 5 * time.Second

// netConf is the part of Rewire's own network config the plugin reads.
type netConf struct {
	CNIVersion string `json:"cniVersion"`
	SocketPath string `json:"socketPath"`
}

func main() {
	out, code := run(os.Getenv, os.Stdin)
	os.Stdout.Write(out)
	os.Exit(code)
}

func run(getenv func(string) string, stdin io.Reader) ([]byte, int) {
	cmd := getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		return []byte(`{"cniVersion":"1.1.0","supportedVersions":` + supportedVersions + `}`), 0
	}
	config, err := io.ReadAll(stdin)
	if err != nil {
		return cniError("1.1.0", 5, "reading stdin", err.Error()), 1
	}
	var conf netConf
	if err := json.Unmarshal(config, &conf); err != nil {
		return cniError("1.1.0", 6, "decoding network config", err.Error()), 1
	}
	if cmd == "" {
		return cniError(conf.CNIVersion, 4, "CNI_COMMAND is not set", ""), 1
	}
	if conf.SocketPath == "" {
		conf.SocketPath = wire.DefaultSocket
	}
	req := wire.Request{
		Command: cmd, ContainerID: getenv("CNI_CONTAINERID"), NetNS: getenv("CNI_NETNS"),
		IfName: getenv("CNI_IFNAME"), Args: getenv("CNI_ARGS"), Path: getenv("CNI_PATH"), Config: config,
	}
	resp, err := post(conf.SocketPath, &req)
	if err != nil {
		return cniError(conf.CNIVersion, 11, "try again later: rewired is not reachable", err.Error()), 1
	}
	return resp.Stdout, resp.ExitCode
}

func post(socket string, req *wire.Request) (*wire.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	conn, err := dialWithRetry(socket)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
	}}
	hr, err := client.Post("http://rewired"+wire.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(hr.Body, 4096))
		return nil, fmt.Errorf("daemon answered %s: %s", hr.Status, bytes.TrimSpace(msg))
	}
	var resp wire.Response
	if err := json.NewDecoder(hr.Body).Decode(&resp); err != nil {
		return nil, fmt.Errorf("decoding daemon reply: %w", err)
	}
	return &resp, nil
}

// dialWithRetry connects to the daemon socket, retrying while the daemon is
// starting (socket missing or refusing) for at most connectWait.
func dialWithRetry(socket string) (net.Conn, error) {
	deadline := time.Now().Add(connectWait)
	delay := 50 * time.Millisecond
	for {
		conn, err := net.Dial("unix", socket)
		if err == nil || time.Now().Add(delay).After(deadline) {
			return conn, err
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

func cniError(version string, code int, msg, details string) []byte {
	if version == "" {
		version = "1.1.0"
	}
	b, _ := json.Marshal(map[string]interface{}{"cniVersion": version, "code": code, "msg": msg, "details": details})
	return b
}
