package leancni

import (
	"context"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/version"
)

// answering is a plugin exec that answers at once with a bridge's result.
type answering struct{}

func (answering) ExecPlugin(context.Context, string, []byte, []string) ([]byte, error) {
	return []byte(`{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"de:ad:be:ef:00:01"},{"name":"veth1234abcd","mac":"de:ad:be:ef:00:02"},{"name":"eth0","mac":"de:ad:be:ef:00:03","sandbox":"/var/run/netns/cni-1234"}],"ips":[{"interface":2,"address":"10.244.0.17/24","gateway":"10.244.0.1"},{"interface":2,"address":"fd00:10:244::17/64","gateway":"fd00:10:244::1"}],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}],"dns":{}}`), nil
}
func (answering) FindInPath(plugin string, _ []string) (string, error) {
	return "/opt/cni/bin/" + plugin, nil
}
func (answering) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// BenchmarkAddDel is leancni's own work for ADD and DEL of a bridge and
// portmap list with plugins that cost nothing.
func BenchmarkAddDel(b *testing.B) {
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"podnet","plugins":[
		{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}],[{"subnet":"fd00:10:244::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}},
		{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}`))
	if err != nil {
		b.Fatal(err)
	}
	c := New([]string{"/opt/cni/bin"}, b.TempDir(), answering{})
	rt := &libcni.RuntimeConf{ContainerID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", NetNS: "/var/run/netns/cni-1234", IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web-0"}}, CapabilityArgs: map[string]any{"portMappings": []any{}}}
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.AddNetworkList(ctx, list, rt); err != nil {
			b.Fatal(err)
		}
		if err := c.DelNetworkList(ctx, list, rt); err != nil {
			b.Fatal(err)
		}
	}
}
