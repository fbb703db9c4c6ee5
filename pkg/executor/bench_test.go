package executor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/store"
)

// instantCNI is a delegate that answers at once with an address, so that
// a benchmark sees only the executor's and the store's own work.
type instantCNI struct {
	libcni.CNI
	n int
}

func (f *instantCNI) AddNetworkList(_ context.Context, _ *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	f.n++
	ip := net.IPv4(10, byte(f.n>>16), byte(f.n>>8), byte(f.n))
	zero := 0
	return &current.Result{CNIVersion: "1.1.0",
		Interfaces: []*current.Interface{{Name: rt.IfName, Mac: "02:00:00:00:00:01", Sandbox: rt.NetNS}},
		IPs:        []*current.IPConfig{{Interface: &zero, Address: net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}, Gateway: net.IPv4(10, 0, 0, 1)}},
	}, nil
}

func (f *instantCNI) DelNetworkList(context.Context, *libcni.NetworkConfigList, *libcni.RuntimeConf) error {
	return nil
}

func (f *instantCNI) GetCachedAttachments(string) ([]*libcni.NetworkAttachment, error) {
	return nil, nil
}

// BenchmarkOwnWork measures Executor.Add and Del (store records with their
// durable writes, result handling) with delegates that cost nothing: the
// executor's share of rewired's own time per ADD and DEL, medians.
func BenchmarkOwnWork(b *testing.B) {
	for _, n := range []int{0, 1, 3} {
		b.Run(fmt.Sprintf("secondaries=%d", n), func(b *testing.B) {
			st := newStore(b)
			e := New(&instantCNI{}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
			specs := []attachment.Spec{{Network: "cluster", IfName: "eth0", Primary: true,
				Config: []byte(`{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.250.0.0/16"}]]}},{"type":"portmap","capabilities":{"portMappings":true}}]}`)}}
			for i := range n {
				name := fmt.Sprintf("mv%d", i)
				specs = append(specs, attachment.Spec{Network: "default/" + name, IfName: fmt.Sprintf("net%d", i+1),
					Config: fmt.Appendf(nil, `{"cniVersion":"0.3.0","name":%q,"plugins":[{"type":"macvlan","master":"eth0","mode":"bridge","ipam":{"type":"host-local","subnet":"172.20.%d.0/24","rangeStart":"172.20.%d.10","rangeEnd":"172.20.%d.250"}}]}`, name, i, i, i)})
			}
			ctx := context.Background()
			var adds, dels []time.Duration
			b.ResetTimer()
			for i := range b.N {
				sb := &store.Sandbox{ContainerID: fmt.Sprintf("c%d", i), NetNS: "/var/run/netns/x", IfName: "eth0",
					PodNamespace: "default", PodName: fmt.Sprintf("p%d", i), PodUID: fmt.Sprint(i), CNIVersion: "1.1.0"}
				start := time.Now()
				if _, err := e.Add(ctx, sb, specs); err != nil {
					b.Fatal(err)
				}
				adds = append(adds, time.Since(start))
				start = time.Now()
				if err := e.Del(ctx, sb.ContainerID, sb.NetNS, nil); err != nil {
					b.Fatal(err)
				}
				dels = append(dels, time.Since(start))
			}
			b.StopTimer()
			med := func(d []time.Duration) float64 {
				sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
				return float64(d[len(d)/2].Microseconds()) / 1000
			}
			b.ReportMetric(med(adds), "add-median-ms")
			b.ReportMetric(med(dels), "del-median-ms")
		})
	}
}

// BenchmarkCacheMayAdd: finding whether libcni's cache holds an unknown
// attachment of a container on a node with 100 pods of 4 networks each
// (400 cache files), by reading the directory and from leancni's index.
func BenchmarkCacheMayAdd(b *testing.B) {
	dir := b.TempDir()
	results := leancni.ResultsDir(dir)
	if err := os.MkdirAll(results, 0o700); err != nil {
		b.Fatal(err)
	}
	for pod := range 100 {
		for _, n := range []string{"cluster-eth0", "net-a-net1", "net-b-net2", "net-c-net3"} {
			net, ifName, _ := strings.Cut(n, "-net")
			name := leancni.ResultFile(net, fmt.Sprintf("%064d", pod), "net"+ifName)
			if err := os.WriteFile(filepath.Join(results, name), []byte("{}"), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	known := map[[2]string]bool{{"cluster", "eth0"}: true}
	for _, tc := range []struct {
		name string
		e    *Executor
	}{
		{"directory", &Executor{CacheDir: dir}},
		{"index", &Executor{CacheDir: dir, Cache: leancni.New(nil, dir, nil)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				tc.e.cacheMayAdd(fmt.Sprintf("%064d", 100), known)
			}
		})
	}
}
