package selfgc

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxMessage bounds the runtime's answer, as the kubelet's CRI client does.
const maxMessage = 16 << 20

// CRI lists pod sandboxes over the CRI RuntimeService (ListPodSandbox) of
// the runtime listening on a unix socket: containerd's, CRI-O's.
type CRI struct {
	// Endpoint is unix:///PATH or PATH.
	Endpoint string
	// Timeout bounds one listing (default 30s).
	Timeout time.Duration
}

// NewCRI returns the CRI client of an endpoint, checking its form.
func NewCRI(endpoint string) (CRI, error) {
	_, err := socketPath(endpoint)
	return CRI{Endpoint: endpoint}, err
}

// ListSandboxes implements Lister: every sandbox, in any state (no filter).
func (c CRI) ListSandboxes(ctx context.Context) ([]Sandbox, error) {
	path, err := socketPath(c.Endpoint)
	if err != nil {
		return nil, err
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)))
	if err != nil {
		return nil, fmt.Errorf("CRI %s: %w", c.Endpoint, err)
	}
	defer conn.Close()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("CRI ListPodSandbox on %s: %w", c.Endpoint, err)
	}
	out := make([]Sandbox, 0, len(resp.GetItems()))
	for _, s := range resp.GetItems() {
		md := s.GetMetadata()
		out = append(out, Sandbox{ID: s.GetId(), Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid()})
	}
	return out, nil
}

// socketPath is the socket file of a CRI endpoint: unix:///PATH or an
// absolute PATH (the kubelet's --container-runtime-endpoint forms).
func socketPath(endpoint string) (string, error) {
	path, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok && strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("CRI endpoint %q: only unix sockets are supported", endpoint)
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("CRI endpoint %q: want unix:///PATH or an absolute path", endpoint)
	}
	return path, nil
}
