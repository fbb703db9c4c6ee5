package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Runtime stands in for containerd's CNI calls: it executes the rewire
// plugin binary through libcni with the pod's CNI_ARGS.
type Runtime struct {
	CNI  *libcni.CNIConfig
	Conf *libcni.NetworkConfigList
}

// NewRuntime returns a runtime whose network is Rewire's config talking to
// socket (and naming the daemon's stateDir for DELs without it), in the
// given CNI version. binDirs must hold the rewire binary.
func NewRuntime(binDirs []string, cacheDir, socket, stateDir, cniVersion string) (*Runtime, error) {
	conf := fmt.Sprintf(`{"cniVersion":%q,"name":"rewire-net","plugins":[{"type":"rewire","socketPath":%q,"stateDir":%q,
		"capabilities":{"portMappings":true,"bandwidth":true}}]}`, cniVersion, socket, stateDir)
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return nil, err
	}
	return &Runtime{CNI: libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, PluginExec()), Conf: list}, nil
}

// PluginExec is libcni's default plugin exec, made explicitly: libcni
// creates a missing one lazily, which races when calls run concurrently.
func PluginExec() invoke.Exec {
	return &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
}

// Pod is a sandbox the runtime networks.
type Pod struct {
	Namespace, Name, UID string
	ContainerID          string
	NetNS                ns.NetNS
	IfName               string
	// CapabilityArgs are runtimeConfig values (portMappings, ...).
	CapabilityArgs map[string]interface{}
}

func (r *Runtime) rt(p *Pod) *libcni.RuntimeConf {
	ifName := p.IfName
	if ifName == "" {
		ifName = "eth0"
	}
	netns := ""
	if p.NetNS != nil {
		netns = p.NetNS.Path()
	}
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID, NetNS: netns, IfName: ifName, CapabilityArgs: p.CapabilityArgs,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID}, {"K8S_POD_UID", p.UID}},
	}
}

// Add runs CNI ADD.
func (r *Runtime) Add(ctx context.Context, p *Pod) (types.Result, error) {
	return r.CNI.AddNetworkList(ctx, r.Conf, r.rt(p))
}

// Del runs CNI DEL.
func (r *Runtime) Del(ctx context.Context, p *Pod) error {
	return r.CNI.DelNetworkList(ctx, r.Conf, r.rt(p))
}

// Check runs CNI CHECK.
func (r *Runtime) Check(ctx context.Context, p *Pod) error {
	return r.CNI.CheckNetworkList(ctx, r.Conf, r.rt(p))
}

// Status runs CNI STATUS.
func (r *Runtime) Status(ctx context.Context) error {
	return r.CNI.GetStatusNetworkList(ctx, r.Conf)
}

// GC runs CNI GC with the given live pods.
func (r *Runtime) GC(ctx context.Context, live ...*Pod) error {
	var valid []types.GCAttachment
	for _, p := range live {
		valid = append(valid, types.GCAttachment{ContainerID: p.ContainerID, IfName: r.rt(p).IfName})
	}
	return r.CNI.GCNetworkList(ctx, r.Conf, &libcni.GCArgs{ValidAttachments: valid})
}

// Link is an interface as seen inside a netns.
type Link struct {
	Name  string
	Index int
	MAC   string
	Addrs []string // CIDR strings
	Up    bool
}

// Links lists the interfaces of a netns (lo excluded), by name.
func Links(netns ns.NetNS) (map[string]Link, error) {
	out := map[string]Link{}
	err := netns.Do(func(ns.NetNS) error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			if a.Name == "lo" {
				continue
			}
			addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			link := Link{Name: a.Name, Index: a.Index, MAC: a.HardwareAddr.String(), Up: a.Flags&1 != 0}
			for _, ad := range addrs {
				if ad.IP.IsLinkLocalUnicast() {
					continue
				}
				link.Addrs = append(link.Addrs, ad.IPNet.String())
			}
			out[a.Name] = link
		}
		return nil
	})
	return out, err
}

// DefaultRouteDev returns the interface of the IPv4 default route in netns.
func DefaultRouteDev(netns ns.NetNS) (string, error) {
	return DefaultRouteDevFamily(netns, netlink.FAMILY_V4)
}

// DefaultRouteDevFamily is the interface of the default route of one family
// in netns ("" when there is none).
func DefaultRouteDevFamily(netns ns.NetNS, family int) (string, error) {
	dev := ""
	err := netns.Do(func(ns.NetNS) error {
		routes, err := netlinksafe.RouteList(nil, family)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() && isDefault(r.Dst) {
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return err
				}
				dev = l.Attrs().Name
			}
		}
		return nil
	})
	return dev, err
}

func isDefault(n *net.IPNet) bool { ones, _ := n.Mask.Size(); return ones == 0 }

// Snapshot is the leak-relevant state of the host (or of the part of it a
// test made, see Scope): links, addresses, routes and policy rules, and the
// files under watched directories (host-local allocations, store records,
// caches). Addresses and routes are "dev what".
type Snapshot struct {
	Links  []string
	Addrs  []string
	Routes []string
	Rules  []string
	Files  []string
}

// TakeSnapshot records the host's network state and every file under dirs
// (host-local's lock and last_reserved_ip files excluded: they are not
// allocations). A leak check takes a TakeScopedSnapshot instead: the whole
// host changes under it whenever anything else on the machine does.
func TakeSnapshot(dirs ...string) (Snapshot, error) {
	return takeSnapshot(nil, dirs)
}

// takeSnapshot records the network state in scope (nil: all of it) and the
// files under dirs.
func takeSnapshot(scope *Scope, dirs []string) (Snapshot, error) {
	var s Snapshot
	if err := s.network(scope); err != nil {
		return s, err
	}
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			base := e.Name()
			if base == "lock" || strings.HasPrefix(base, "last_reserved_ip") {
				return nil
			}
			s.Files = append(s.Files, path)
			return nil
		})
	}
	sort.Strings(s.Files)
	return s, nil
}

func (s *Snapshot) network(scope *Scope) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	links, err := netlinksafe.LinkList()
	if err != nil {
		return err
	}
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	var in *scoped
	if scope != nil {
		in = inScope(scope, links, addrs)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		if in.link(l) {
			s.Links = append(s.Links, l.Attrs().Name)
		}
	}
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() && in.addr(a) {
			s.Addrs = append(s.Addrs, names[a.LinkIndex]+" "+a.IPNet.String())
		}
	}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if (r.Dst == nil || !r.Dst.IP.IsLinkLocalUnicast()) && in.route(r) {
			s.Routes = append(s.Routes, fmt.Sprintf("%s %v via %v table %d", names[r.LinkIndex], r.Dst, r.Gw, r.Table))
		}
	}
	rules, err := netlinksafe.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if in.rule(r) {
			s.Rules = append(s.Rules, fmt.Sprintf("%d %v %v table %d", r.Priority, r.Src, r.Dst, r.Table))
		}
	}
	for _, l := range [][]string{s.Links, s.Addrs, s.Routes, s.Rules} {
		sort.Strings(l)
	}
	return nil
}

// Without drops the links named and the addresses and routes on them (the
// bridges a bridge plugin leaves behind by design).
func (s Snapshot) Without(links ...string) Snapshot {
	keep := func(list []string, dev func(string) string) []string {
		var out []string
		for _, v := range list {
			if !slices.Contains(links, dev(v)) {
				out = append(out, v)
			}
		}
		return out
	}
	first := func(v string) string { f, _, _ := strings.Cut(v, " "); return f }
	s.Links = keep(s.Links, func(v string) string { return v })
	s.Addrs = keep(s.Addrs, first)
	s.Routes = keep(s.Routes, first)
	return s
}

// Diff describes what after has that s lacks and the reverse; "" if equal.
func (s Snapshot) Diff(after Snapshot) string {
	var b strings.Builder
	diffList(&b, "link", s.Links, after.Links)
	diffList(&b, "address", s.Addrs, after.Addrs)
	diffList(&b, "route", s.Routes, after.Routes)
	diffList(&b, "rule", s.Rules, after.Rules)
	diffList(&b, "file", s.Files, after.Files)
	return b.String()
}

func diffList(b *strings.Builder, kind string, before, after []string) {
	in := func(list []string, v string) bool {
		i := sort.SearchStrings(list, v)
		return i < len(list) && list[i] == v
	}
	for _, v := range after {
		if !in(before, v) {
			fmt.Fprintf(b, "leaked %s: %s\n", kind, v)
		}
	}
	for _, v := range before {
		if !in(after, v) {
			fmt.Fprintf(b, "vanished %s: %s\n", kind, v)
		}
	}
}
