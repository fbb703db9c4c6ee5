package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/wire"
)

// FuzzHandle: any request the socket decodes gets a CNI answer, never a
// panic. The daemon here has no cluster network file, so ADD stops at
// readiness and DEL/CHECK/GC meet an executor-free path only through errors
// that do not need it; the decoder and argument parsing are what is fuzzed.
func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		`{"command":"ADD","containerID":"c1","netns":"/x","ifName":"eth0","args":"K8S_POD_NAMESPACE=a;K8S_POD_NAME=b","config":"eyJjbmlWZXJzaW9uIjoiMS4xLjAifQ=="}`,
		`{"command":"VERSION","config":""}`, `{"command":"ADD","args":"novalue","config":"e30="}`,
		`{"command":"STATUS","config":"eyJjbmlWZXJzaW9uIjoiMC4xLjAifQ=="}`, `{`,
	} {
		f.Add(s)
	}
	cfg, _ := config.Parse([]byte("clusterNetwork: /nonexistent/rewire-fuzz\n"))
	d := &Daemon{Config: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, s string) {
		var req wire.Request
		if json.Unmarshal([]byte(s), &req) != nil {
			return
		}
		if req.Command != "ADD" && req.Command != "STATUS" && req.Command != "VERSION" && req.Command != "" {
			return // DEL, CHECK and GC need an executor; integration tests cover them
		}
		resp := d.Handle(context.Background(), &req)
		if resp.ExitCode == 0 && req.Command == "ADD" {
			t.Fatalf("ADD succeeded without a cluster network: %s", s)
		}
		var out map[string]interface{}
		if err := json.Unmarshal(resp.Stdout, &out); resp.ExitCode != 0 && (err != nil || out["code"] == nil) {
			t.Fatalf("error answer is not a CNI error: %s", resp.Stdout)
		}
	})
}
