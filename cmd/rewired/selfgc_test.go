package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/config"
)

// criSocket "off" starts no self-GC; an endpoint that is not a unix
// socket stops rewired at start, saying so.
func TestStartSelfGCConfig(t *testing.T) {
	for _, c := range []struct{ socket, err string }{
		{`"off"`, ""},
		{`""`, ""},
		{"tcp://10.0.0.1:1234", "criSocket: CRI endpoint"},
		{"run/containerd.sock", "criSocket: CRI endpoint"},
	} {
		cfg, err := config.Parse([]byte("clusterNetwork: x\ncriSocket: " + c.socket + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		// Neither starts anything: no daemon or pod cache is needed.
		err = startSelfGC(context.Background(), cfg, options{}, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("criSocket %s: startSelfGC = %v, want %q", c.socket, err, c.err)
		}
	}
}
