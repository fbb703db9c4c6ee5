package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/devinfo"
	"github.com/rewire-cni/rewire/pkg/wire"
)

// Every request field that becomes part of a path is refused with code 4
// before the handler uses it: no command gets as far as the executor (nil
// here: reaching it would panic), the device-info dir or the readiness
// check.
func TestHandleRefusesPathsFromTheRequest(t *testing.T) {
	base := t.TempDir()
	cfg, err := config.Parse([]byte("clusterNetwork: " + filepath.Join(base, "no-such-network") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Config: cfg, DevInfo: devinfo.Dir(filepath.Join(base, "devinfo")),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	good := wire.Request{ContainerID: "c1", IfName: "eth0", NetNS: "/var/run/netns/x",
		Args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p", Config: []byte(`{"cniVersion":"1.0.0","name":"rw","type":"rewire"}`)}
	cases := []struct {
		name, field string
		mod         func(*wire.Request)
	}{
		{"container ID", "CNI_CONTAINERID", func(r *wire.Request) { r.ContainerID = "../../etc" }},
		{"container ID into devinfo", "CNI_CONTAINERID", func(r *wire.Request) { r.ContainerID = "x/../../../../etc/cron.d/x" }},
		{"container ID glob", "CNI_CONTAINERID", func(r *wire.Request) { r.ContainerID = "*" }},
		{"interface name", "CNI_IFNAME", func(r *wire.Request) { r.IfName = "../../etc" }},
		{"netns relative", "CNI_NETNS", func(r *wire.Request) { r.NetNS = "../../etc" }},
		{"netns with ..", "CNI_NETNS", func(r *wire.Request) { r.NetNS = "/var/run/netns/../../../etc/passwd" }},
	}
	for _, command := range []string{"ADD", "DEL", "CHECK"} {
		for _, c := range cases {
			t.Run(command+" "+c.name, func(t *testing.T) {
				req := good
				req.Command = command
				c.mod(&req)
				resp := d.Handle(context.Background(), &req)
				var out struct {
					Code uint   `json:"code"`
					Msg  string `json:"msg"`
				}
				if err := json.Unmarshal(resp.Stdout, &out); err != nil {
					t.Fatalf("answer %q: %v", resp.Stdout, err)
				}
				if resp.ExitCode == 0 || out.Code != 4 || !strings.HasPrefix(out.Msg, c.field+": invalid") {
					t.Errorf("exit %d, code %d, msg %q; want code 4 naming %s", resp.ExitCode, out.Code, out.Msg, c.field)
				}
			})
		}
	}
	entries, err := os.ReadDir(base)
	if err != nil || len(entries) != 0 {
		t.Errorf("the refused requests created files in %s: %v %v", base, entries, err)
	}
}
