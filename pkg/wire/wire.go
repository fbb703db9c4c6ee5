// Package wire is the protocol between the rewire CNI plugin and the rewired
// daemon: one HTTP POST over a root-only unix socket carrying the CNI
// environment and stdin; the reply is what the plugin prints and its exit code.
package wire

// Path is the HTTP path CNI requests are posted to.
const Path = "/cni"

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
