package multuscache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/fsutil"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/store"
)

// Hint is what the caller knows of a sandbox besides Multus's files.
type Hint struct {
	// NetNS is the runtime's CNI_NETNS (a DEL's); empty: libcni's cache.
	NetNS string
	// NetworkStatus is the pod's network-status annotation as Multus wrote
	// it (nadutils.CreateNetworkStatus entries): it names the master's
	// interface and stands in for a result libcni's cache lacks.
	NetworkStatus string
}

// Sandbox builds Rewire's record of a sandbox from Multus's files in dir:
// one attachment per delegate in Multus's order (the first the primary),
// each with the interface name Multus gave it, the exact config Multus ran,
// the runtimeConfig and CNI_ARGS Multus passed (from libcni's cache, else
// rebuilt as Multus's mergeCNIRuntimeConfig and delegateAdd make them) and
// its result. It also returns libcni's cache files of the attachments. A
// container without a delegates file gives (nil, nil, nil).
//
// Attachments get no Selection: the first hot-plug reconcile of the pod
// takes the annotation they were made from to be the current one.
func Sandbox(dir, containerID string, hint Hint) (*store.Sandbox, []*CachedResult, error) {
	delegates, err := ReadDelegates(dir, containerID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return fromResults(dir, containerID, hint, err)
	}
	results, err := ReadResults(dir, containerID)
	if err != nil {
		return nil, nil, err
	}
	var status []netstatus.Status
	if hint.NetworkStatus != "" {
		_ = json.Unmarshal([]byte(hint.NetworkStatus), &status) // a fallback only
	}
	ifNames := interfaceNames(delegates, results, status)
	cached := map[[2]string]*CachedResult{}
	for _, r := range results {
		cached[[2]string{r.NetworkName, r.IfName}] = r
	}
	master := cached[[2]string{delegates[0].NetworkName(), ifNames[0]}]
	sb := &store.Sandbox{ContainerID: containerID, NetNS: hint.NetNS, IfName: ifNames[0], Complete: true,
		Adopted: "multus:" + dir}
	if st, err := os.Stat(Path(dir, containerID)); err == nil {
		sb.Created = st.ModTime()
	}
	if master != nil {
		sb.Args = master.CniArgs
	}
	for _, r := range results {
		if sb.NetNS == "" {
			sb.NetNS = r.NetNS
		}
		if sb.PodUID == "" {
			sb.PodNamespace, sb.PodName, sb.PodUID = r.arg("K8S_POD_NAMESPACE"), r.arg("K8S_POD_NAME"), r.arg("K8S_POD_UID")
		}
	}
	var used []*CachedResult
	for i, d := range delegates {
		c := cached[[2]string{d.NetworkName(), ifNames[i]}]
		a, err := attach(d, i, ifNames[i], sb, c, status)
		if err != nil {
			return nil, nil, fmt.Errorf("multus cache %s: %w", Path(dir, containerID), err)
		}
		if sb.CNIVersion == "" {
			if l, err := a.ConfList(); err == nil {
				sb.CNIVersion = l.CNIVersion
			}
		}
		sb.Attachments = append(sb.Attachments, a)
		if c != nil {
			used = append(used, c)
		}
	}
	return sb, used, nil
}

// fromResults builds the record of a sandbox whose delegates file is
// damaged (truncated by a crash or a power loss) from libcni's cache of its
// attachments alone: each cache file holds the exact config, interface,
// arguments and result of one, which is all its DEL needs. The primary is
// the interface network-status marks default, else eth0. Without cache
// files nothing can be released: readErr is returned.
func fromResults(dir, containerID string, hint Hint, readErr error) (*store.Sandbox, []*CachedResult, error) {
	results, err := ReadResults(dir, containerID)
	if err != nil || len(results) == 0 {
		return nil, nil, fmt.Errorf("%w (and libcni's cache in %s holds no attachment of it to release)", readErr, dir)
	}
	var status []netstatus.Status
	_ = json.Unmarshal([]byte(hint.NetworkStatus), &status)
	primary := "eth0"
	for _, st := range status {
		if st.Default && st.Interface != "" {
			primary = st.Interface
		}
	}
	sb := &store.Sandbox{ContainerID: containerID, NetNS: hint.NetNS, IfName: primary, Complete: true,
		Adopted: "multus:" + dir, Args: results[0].CniArgs}
	for _, c := range results {
		d, err := NewDelegate(c.Config, c.NetworkName)
		if err != nil {
			return nil, nil, fmt.Errorf("%w; libcni's cache file %s: %v", readErr, c.File, err)
		}
		conf, err := d.ConfigList()
		if err != nil {
			return nil, nil, fmt.Errorf("%w; libcni's cache file %s: %v", readErr, c.File, err)
		}
		if sb.NetNS == "" {
			sb.NetNS = c.NetNS
		}
		a := store.Attachment{State: store.Added, Spec: attachment.Spec{Network: c.NetworkName, IfName: c.IfName,
			Primary: c.IfName == primary, Config: conf, CapabilityArgs: c.CapabilityArgs}}
		if a.Result, err = result(d, c.IfName, sb, c, nil); err != nil {
			return nil, nil, fmt.Errorf("%w; libcni's cache file %s: %v", readErr, c.File, err)
		}
		sb.Attachments = append(sb.Attachments, a)
	}
	return sb, results, nil
}

// interfaceNames are the delegates' interface names. The master's is the
// runtime's CNI_IFNAME, which only libcni's cache (the master network's
// file under a name no other delegate uses) or network-status (the entry
// marked default) still know; eth0 when neither does.
func interfaceNames(delegates []*DelegateNetConf, results []*CachedResult, status []netstatus.Status) []string {
	names := make([]string, len(delegates))
	taken := map[string]bool{}
	for i, d := range delegates[1:] {
		names[i+1] = IfName(d, "", i+1)
		taken[names[i+1]] = true
	}
	names[0] = delegates[0].IfnameRequest
	for _, r := range results {
		if names[0] == "" && r.NetworkName == delegates[0].NetworkName() && !taken[r.IfName] {
			names[0] = r.IfName
		}
	}
	for _, s := range status {
		if names[0] == "" && s.Default && s.Interface != "" {
			names[0] = s.Interface
		}
	}
	if names[0] == "" {
		names[0] = "eth0"
	}
	return names
}

// attach builds the stored attachment of delegate idx.
func attach(d *DelegateNetConf, idx int, ifName string, sb *store.Sandbox, c *CachedResult, status []netstatus.Status) (store.Attachment, error) {
	conf, err := d.ConfigList()
	if err != nil {
		return store.Attachment{}, err
	}
	name := d.Name
	if name == "" {
		name = d.NetworkName()
	}
	a := store.Attachment{State: store.Added, Spec: attachment.Spec{
		Network: name, IfName: ifName, Primary: idx == 0, Config: conf,
		ResourceName: d.ResourceName, DeviceID: d.DeviceID,
	}}
	if d.GatewayRequest != nil {
		for _, gw := range *d.GatewayRequest {
			a.DefaultRoute = append(a.DefaultRoute, gw.String())
		}
	}
	var extra [][2]string
	if c != nil {
		a.CapabilityArgs = c.CapabilityArgs
		for _, kv := range c.CniArgs {
			if !slices.Contains(sb.Args, kv) {
				extra = append(extra, kv) // this delegate's own: MAC=, IP=
			}
		}
	} else if !d.MasterPlugin {
		a.CapabilityArgs, extra = requests(d)
	}
	a.SetCNIArgs(extra)
	if a.Result, err = result(d, ifName, sb, c, status); err != nil {
		return store.Attachment{}, fmt.Errorf("delegate %s (%s): %w", name, ifName, err)
	}
	return a, nil
}

// requests rebuilds what Multus passes a non-master delegate: runtimeConfig
// from its requests (mergeCNIRuntimeConfig, newCNIRuntimeConf in
// pkg/types/conf.go; portMappings and bandwidth are not in the file) and
// MAC= and IP= in CNI_ARGS (delegateAdd in pkg/multus/multus.go).
func requests(d *DelegateNetConf) (map[string]interface{}, [][2]string) {
	caps := map[string]interface{}{}
	var args [][2]string
	if len(d.IPRequest) > 0 {
		caps["ips"] = d.IPRequest
	}
	if d.MacRequest != "" {
		caps["mac"] = d.MacRequest
		args = append(args, [2]string{"MAC", d.MacRequest})
	}
	if len(d.IPRequest) > 0 {
		args = append(args, [2]string{"IP", strings.Join(d.IPRequest, ",")})
	}
	if d.InfinibandGUIDRequest != "" {
		caps["infinibandGUID"] = d.InfinibandGUIDRequest
	}
	if d.DeviceID != "" {
		caps["deviceID"] = d.DeviceID
	}
	if len(caps) == 0 {
		caps = nil
	}
	return caps, args
}

// result is the attachment's result as Rewire stores it (the current CNI
// version): libcni's cached one, else one made of its network-status entry
// (addresses without their prefix length: host routes), else empty.
func result(d *DelegateNetConf, ifName string, sb *store.Sandbox, c *CachedResult, status []netstatus.Status) (json.RawMessage, error) {
	if c != nil && c.RawResult != nil {
		raw, err := json.Marshal(c.RawResult)
		if err != nil {
			return nil, err
		}
		cv, _ := c.RawResult["cniVersion"].(string)
		if cv == "" {
			cv = d.CNIVersion()
		}
		r, err := version.NewResult(cv, raw)
		if err != nil {
			return nil, fmt.Errorf("cached result: %w", err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			return nil, fmt.Errorf("cached result: %w", err)
		}
		return res.MarshalJSON()
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, s := range status {
		if s.Interface != ifName {
			continue
		}
		res.Interfaces = []*current.Interface{{Name: ifName, Mac: s.MAC, Mtu: s.MTU, Sandbox: sb.NetNS}}
		for _, ip := range s.IPs {
			addr := net.ParseIP(ip)
			if addr == nil {
				continue
			}
			bits := 128
			if addr.To4() != nil {
				addr, bits = addr.To4(), 32
			}
			zero := 0
			res.IPs = append(res.IPs, &current.IPConfig{Interface: &zero,
				Address: net.IPNet{IP: addr, Mask: net.CIDRMask(bits, bits)}})
		}
		if s.DNS != nil {
			res.DNS = types.DNS{Nameservers: s.DNS.Nameservers, Domain: s.DNS.Domain, Search: s.DNS.Search, Options: s.DNS.Options}
		}
	}
	return res.MarshalJSON()
}

// Source is Multus's state on a node as the executor's foreign state
// (executor.Foreign): the sandboxes Multus networked, taken over by Rewire.
type Source struct {
	// Dir is Multus's cniDir; empty or Off: no takeover.
	Dir string
	// CacheDir is Rewire's libcni cache dir: libcni's cache files of an
	// adopted sandbox are copied there, so that its DEL and CHECK get their
	// prevResult as under Multus.
	CacheDir string
}

// Off is the cniDir that turns the takeover off.
const Off = "none"

func (s Source) off() bool { return s.Dir == "" || s.Dir == Off }

// IDs lists the containers Multus has a delegates file for (of one pod when
// podUID is given).
func (s Source) IDs(podUID string) ([]string, error) {
	if s.off() {
		return nil, nil
	}
	return Containers(s.Dir, podUID)
}

// Sandbox builds the record of a container Multus networked (nil when
// Multus has no delegates file for it) and copies libcni's cache files of
// its attachments into CacheDir.
func (s Source) Sandbox(containerID, netns, networkStatus string) (*store.Sandbox, error) {
	if s.off() {
		return nil, nil
	}
	sb, cached, err := Sandbox(s.Dir, containerID, Hint{NetNS: netns, NetworkStatus: networkStatus})
	if err != nil || sb == nil {
		return nil, err
	}
	for _, c := range cached {
		if err := copyCached(leancni.ResultsDir(s.CacheDir), c); err != nil {
			return nil, fmt.Errorf("copying libcni's cache of %s: %w", containerID, err)
		}
	}
	return sb, nil
}

// Forget removes Multus's files of a container Rewire deleted.
func (s Source) Forget(containerID string) error {
	if s.off() {
		return nil
	}
	return Remove(s.Dir, containerID)
}

// copyCached writes one of libcni's cache files into dir (0700, as libcni
// makes it), synced: the record that needs it is committed next.
func copyCached(dir string, c *CachedResult) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fsutil.WriteAtomic(filepath.Join(dir, c.File), 0o600, bytes.NewReader(c.Raw), true)
}
