// Package wire is the protocol between the rewire CNI plugin and the rewired
// daemon: one HTTP POST over a root-only unix socket carrying the CNI
// environment and stdin; the reply is what the plugin prints and its exit code.
package wire

// Path is the HTTP path CNI requests are posted to.
const Path = "/cni"

// RawPath is the HTTP path of the C plugin's requests (shim/rewire.c): the
// Request's fields but Config in the query (command, containerID, netns,
// ifName, args, path), Config as the body; the reply's body is Stdout and
// its ExitCodeHeader the exit code. Nothing to encode or decode but the
// query: the plugin needs no JSON library to speak it.
const RawPath = "/cni/raw"

// ExitCodeHeader carries the plugin's exit code in a RawPath reply.
const ExitCodeHeader = "Rewire-Exit-Code"

// DefaultSocket is where rewired listens unless configured otherwise.
const DefaultSocket = "/run/rewire/rewire.sock"

// Request is one CNI invocation.
type Request struct {
	Command     string `json:"command"`
	ContainerID string `json:"containerID,omitempty"`
	NetNS       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Args        string `json:"args,omitempty"`
	Path        string `json:"path,omitempty"`
	// Config is the network configuration the runtime wrote on stdin.
	Config []byte `json:"config"`
}

// Response is what the plugin writes to stdout and the exit code it returns.
type Response struct {
	Stdout   []byte `json:"stdout,omitempty"`
	ExitCode int    `json:"exitCode"`
}
