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

	"github.com/containernetworking/cni/pkg/types"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/wire"
)

// A thin Multus config as the daemon's config: its delegates[0] is the
// cluster network, and until its readinessindicatorfile exists ADD answers
// "try again later" (code 11) and the daemon is not ready.
func TestMultusReadinessAndDelegate(t *testing.T) {
	indicator := filepath.Join(t.TempDir(), "10-flannel.conflist")
	cfg, err := config.Parse([]byte(`{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",
		"readinessindicatorfile":` + quote(indicator) + `,"kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig",
		"delegates":[{"name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Config: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := d.Ready(); err == nil || !strings.Contains(err.Error(), "readiness indicator file "+indicator) {
		t.Fatalf("Ready() = %v, want the missing readiness indicator file", err)
	}
	resp := d.Handle(context.Background(), &wire.Request{Command: "ADD", ContainerID: "c1", IfName: "eth0", NetNS: "/var/run/netns/x",
		Args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p", Config: []byte(`{"cniVersion":"1.0.0","name":"rw","type":"rewire"}`)})
	var out types.Error
	if err := json.Unmarshal(resp.Stdout, &out); err != nil || resp.ExitCode == 0 || out.Code != types.ErrTryAgainLater {
		t.Fatalf("ADD before the indicator file: exit %d %s, want code 11", resp.ExitCode, resp.Stdout)
	}
	if err := os.WriteFile(indicator, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := d.ClusterNetwork()
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "cbr0" || list.CNIVersion != "0.3.1" || len(list.Plugins) != 2 || list.Plugins[0].Network.Type != "bridge" {
		t.Errorf("cluster network = %s %s %d plugins", list.Name, list.CNIVersion, len(list.Plugins))
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// One message names every attachment whose ips or mac request reaches the
// plugins only in CNI_ARGS, its network, interface and keys.
func TestCNIArgsMessage(t *testing.T) {
	both := attachment.Spec{Network: "default/net", IfName: "net1"}
	both.SetCNIArgs([][2]string{{"MAC", "02:00:00:00:00:21"}, {"IP", "10.1.1.21/24"}})
	mac := attachment.Spec{Network: "default/mv", IfName: "data0"}
	mac.SetCNIArgs([][2]string{{"MAC", "02:00:00:00:00:22"}})
	none := attachment.Spec{Network: "default/caps", IfName: "net2", CapabilityArgs: map[string]interface{}{"ips": []string{"10.0.0.1/24"}}}
	if msg := cniArgsMessage([]attachment.Spec{none}); msg != "" {
		t.Errorf("no CNI_ARGS: %q", msg)
	}
	msg := cniArgsMessage([]attachment.Spec{none, both, mac})
	for _, want := range []string{"default/net (net1): mac and ips, as MAC=02:00:00:00:00:21;IP=10.1.1.21/24",
		"default/mv (data0): mac, as MAC=02:00:00:00:00:22", "strictCapabilities"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "default/caps") {
		t.Errorf("message %q names a network that declares the capability", msg)
	}
}
