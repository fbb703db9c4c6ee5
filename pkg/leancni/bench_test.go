package leancni

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

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

// afterExec answers like answering after before has run (its run is not
// counted as leancni's work).
type afterExec struct {
	answering
	before func()
	spent  *time.Duration
}

func (a afterExec) ExecPlugin(ctx context.Context, path string, conf []byte, env []string) ([]byte, error) {
	start := time.Now()
	a.before()
	*a.spent += time.Since(start)
	return a.answering.ExecPlugin(ctx, path, conf, env)
}

// run runs a program answering CNI VERSION; only the process matters, not
// what it says.
func run(path string) func() {
	return func() {
		cmd := exec.Command(path)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		_ = cmd.Run()
	}
}

// BenchmarkAddDelAfterExec is BenchmarkAddDel's work with and without a
// pause before each plugin answers, interleaved: how much more the same
// work costs right after the CPUs idled or ran another process (in rewired
// every plugin answer follows a process's run). It prints the medians of
// leancni's own time per ADD + DEL (the pauses taken out) after nothing, a
// 2 ms sleep, /bin/true and, with REWIRE_TOOLS_DIR, the reference
// host-local plugin answering VERSION (a Go program's start).
func BenchmarkAddDelAfterExec(b *testing.B) {
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"podnet","plugins":[
		{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}]]}},
		{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}`))
	if err != nil {
		b.Fatal(err)
	}
	names := []string{"nothing", "sleep", "true"}
	befores := []func(){func() {}, func() { time.Sleep(2 * time.Millisecond) }, run("/bin/true")}
	if dir := os.Getenv("REWIRE_TOOLS_DIR"); dir != "" {
		names, befores = append(names, "host-local"), append(befores, run(filepath.Join(dir, "host-local")))
	}
	var spent time.Duration
	clis := make([]*CNI, len(befores))
	for i, before := range befores {
		clis[i] = New([]string{"/opt/cni/bin"}, b.TempDir(), afterExec{before: before, spent: &spent})
	}
	rt := &libcni.RuntimeConf{ContainerID: "0123456789abcdef", NetNS: "/var/run/netns/cni-1", IfName: "eth0"}
	ctx := context.Background()
	own := make([][]time.Duration, len(clis))
	for b.Loop() {
		for i, c := range clis {
			for range 20 {
				spent = 0
				start := time.Now()
				if _, err := c.AddNetworkList(ctx, list, rt); err != nil {
					b.Fatal(err)
				}
				if err := c.DelNetworkList(ctx, list, rt); err != nil {
					b.Fatal(err)
				}
				own[i] = append(own[i], time.Since(start)-spent)
			}
		}
	}
	for i, name := range names {
		slices.Sort(own[i])
		med := float64(own[i][len(own[i])/2].Microseconds()) / 1000
		fmt.Printf("leancni own time per ADD+DEL, %s before each plugin answers: median %.3f ms over %d\n", name, med, len(own[i]))
		b.ReportMetric(med, "own-ms-after-"+name)
	}
}
