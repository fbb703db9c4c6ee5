package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/devinfo"
	"github.com/rewire-cni/rewire/pkg/executor"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/planner"
	"github.com/rewire-cni/rewire/pkg/podresources"
	"github.com/rewire-cni/rewire/pkg/steps"
	"github.com/rewire-cni/rewire/pkg/store"
	"github.com/rewire-cni/rewire/pkg/wire"
)

// supported lists the CNI versions Rewire answers in.
var supported = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Handle serves one CNI request and returns what the plugin must print.
func (d *Daemon) Handle(ctx context.Context, req *wire.Request) *wire.Response {
	start, command := time.Now(), req.Command
	if !knownCommands[command] {
		command = "other" // bounded label values
	}
	metrics.InFlight.Add(1, command)
	ctx, busy := executor.WithBusy(ctx)
	ctx, trace := steps.With(ctx)
	ctx = executor.WithParallel(ctx, d.Config != nil && d.Config.ParallelAttach)
	resp := d.handle(ctx, req)
	metrics.InFlight.Add(-1, command)
	took := time.Since(start)
	metrics.RequestSeconds.Observe(took.Seconds(), command)
	result := "ok"
	if resp.ExitCode != 0 {
		result = "error"
	}
	if command == "ADD" || command == "DEL" {
		// ownMs: the request's time minus the time delegates ran.
		delegates := busy.Total()
		metrics.RequestOwnSeconds.Observe((took - delegates).Seconds(), command)
		d.Log.Debug("CNI request done", "command", command, "containerID", req.ContainerID, "result", result,
			"totalMs", ms(took), "delegateMs", ms(delegates), "ownMs", ms(took-delegates), "ownCpuMs", ms(busy.OwnCPU()), "steps", trace)
	}
	metrics.Requests.Inc(command, result)
	return resp
}

var knownCommands = map[string]bool{"ADD": true, "DEL": true, "CHECK": true, "STATUS": true, "GC": true, "VERSION": true}

func (d *Daemon) handle(ctx context.Context, req *wire.Request) *wire.Response {
	conf, err := decodeConf(req.Config)
	if err == nil {
		err = checkVersion(conf.CNIVersion)
	}
	if err != nil {
		return errorResponse("1.1.0", err)
	}
	steps.Mark(ctx, "decode")
	if err := checkPaths(req); err != nil {
		d.Log.Warn("CNI request refused", "command", req.Command, "err", err)
		return errorResponse(conf.CNIVersion, err)
	}
	out, err := d.dispatch(ctx, req, conf)
	if err != nil {
		_, ref, _ := parseArgs(req.Args)
		d.Log.Warn("CNI request failed", "command", req.Command, "pod", ref.String(), "containerID", req.ContainerID, "err", err)
		return errorResponse(conf.CNIVersion, err)
	}
	return &wire.Response{Stdout: out}
}

func (d *Daemon) dispatch(ctx context.Context, req *wire.Request, conf *netConf) ([]byte, error) {
	args, ref, err := parseArgs(req.Args)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	switch req.Command {
	case "ADD":
		if err := requireEnv(req, true); err != nil {
			return nil, err
		}
		return d.add(ctx, req, conf, args, ref)
	case "DEL":
		if err := requireEnv(req, false); err != nil {
			return nil, err
		}
		// A DEL runs to the end even if the runtime stops waiting.
		return nil, d.del(context.WithoutCancel(ctx), req, args, ref)
	case "CHECK":
		if err := requireEnv(req, true); err != nil {
			return nil, err
		}
		return nil, d.Exec.Check(ctx, req.ContainerID, req.NetNS, args)
	case "STATUS":
		lists, err := d.statusLists()
		if err != nil {
			return nil, types.NewError(types.ErrPluginNotAvailable, "cluster network not ready", err.Error())
		}
		return nil, d.Exec.Status(ctx, lists)
	case "GC":
		return nil, d.Exec.GC(context.WithoutCancel(ctx), conf.ValidAttachments)
	}
	return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND %q", req.Command), "")
}

// checkPaths validates every request field that becomes part of a file
// path or a link name (container ID, interface name, netns path) before any
// of them is used: the device-info file of an attachment, the store record
// and libcni's cache are all named after them.
func checkPaths(req *wire.Request) error {
	if err := req.Validate(); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	return nil
}

func requireEnv(req *wire.Request, needNetNS bool) error {
	var missing []string
	if req.ContainerID == "" {
		missing = append(missing, "CNI_CONTAINERID")
	}
	if req.IfName == "" {
		missing = append(missing, "CNI_IFNAME")
	}
	if needNetNS && req.NetNS == "" {
		missing = append(missing, "CNI_NETNS")
	}
	if len(missing) > 0 {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "missing "+strings.Join(missing, ", "), "")
	}
	return nil
}

func (d *Daemon) add(ctx context.Context, req *wire.Request, conf *netConf, args [][2]string, ref podRef) ([]byte, error) {
	cluster, err := d.ClusterNetwork()
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "try again later: cluster network not ready", err.Error())
	}
	steps.Mark(ctx, "cluster-network")
	pod := planner.Pod{}
	if ref.Name != "" {
		p, err := d.Pods.Get(ctx, ref.Namespace, ref.Name, ref.UID)
		if err != nil {
			return nil, types.NewError(types.ErrTryAgainLater, "try again later: "+err.Error(), "")
		}
		pod = planner.Pod{Namespace: p.Namespace, Name: p.Name, Annotations: d.annotations(p)}
		ref.UID = p.UID
	}
	steps.Mark(ctx, "pod")
	specs, err := d.plan(ctx, pod, ref.UID, cluster, req, conf)
	if err != nil {
		d.event(ref, kube.EventWarning, kube.ReasonAddFailed, err.Error())
		return nil, err
	}
	if msg := cniArgsMessage(specs); msg != "" {
		d.event(ref, kube.EventNormal, kube.ReasonCNIArgsFallback, msg)
	}
	sb := &store.Sandbox{
		ContainerID: req.ContainerID, NetNS: req.NetNS, IfName: req.IfName, Args: args,
		PodNamespace: ref.Namespace, PodName: ref.Name, PodUID: string(ref.UID), CNIVersion: conf.CNIVersion,
	}
	steps.Mark(ctx, "plan")
	results, err := d.Exec.Add(ctx, sb, specs)
	if err != nil {
		d.event(ref, kube.EventWarning, kube.ReasonAddFailed, err.Error())
		return nil, err
	}
	d.report(ref, specs, results)
	steps.Mark(ctx, "report")
	if d.OnAdded != nil && ref.Name != "" {
		d.OnAdded(ref.Namespace, ref.Name)
	}
	out, err := results[0].GetAsVersion(conf.CNIVersion)
	if err != nil {
		return nil, fmt.Errorf("converting result to %s: %w", conf.CNIVersion, err)
	}
	return leancni.EncodeResult(out)
}

// plan computes the attachments and resolves devices and device-info files.
func (d *Daemon) plan(ctx context.Context, pod planner.Pod, uid ktypes.UID, cluster *libcni.NetworkConfigList, req *wire.Request, conf *netConf) ([]attachment.Spec, error) {
	specs, err := planner.Plan(planner.Input{
		Pod: pod, Config: d.Config, ClusterNetwork: cluster, IfName: req.IfName,
		RuntimeArgs: conf.RuntimeConfig, Lookup: d.Networks,
	})
	if err != nil {
		return nil, err
	}
	if podresources.NeedsDevices(specs) {
		if err := d.assignDevices(ctx, pod.Namespace, pod.Name, uid, specs, nil); err != nil {
			return nil, err
		}
	}
	for i := range specs {
		if err := d.prepareDevInfo(&specs[i], req.ContainerID); err != nil {
			return nil, err
		}
	}
	return specs, nil
}

// assignDevices gives the specs waiting for a device the pod's allocated
// devices (device plugins', then its ResourceClaims'), skipping those the
// recorded attachments already use.
func (d *Daemon) assignDevices(ctx context.Context, namespace, name string, uid ktypes.UID, specs, recorded []attachment.Spec) error {
	devs, sourceErr := d.podDevices(ctx, namespace, name, uid)
	for _, r := range recorded {
		ids := devs[r.ResourceName]
		for i, id := range ids {
			if id == r.DeviceID {
				devs[r.ResourceName] = append(ids[:i:i], ids[i+1:]...)
				break
			}
		}
	}
	return d.deviceError(podresources.Assign(specs, devs), sourceErr)
}

func (d *Daemon) prepareDevInfo(s *attachment.Spec, containerID string) error {
	if s.DeviceID == "" || d.DevInfo == "" {
		return nil
	}
	path, err := d.DevInfo.Prepare(s.ResourceName, s.DeviceID, s.Network, containerID, s.IfName)
	if err != nil {
		return fmt.Errorf("network %s: %w", s.Network, err)
	}
	caps := make(map[string]interface{}, len(s.CapabilityArgs)+1)
	for k, v := range s.CapabilityArgs {
		caps[k] = v
	}
	caps[devinfo.Capability] = path
	s.CapabilityArgs = caps
	return nil
}

// cniArgsMessage says which attachments get an ips or mac request only as
// IP= or MAC= in CNI_ARGS, because no plugin of their network declares the
// capability ("" when none does): the Multus way, which static IPAM,
// macvlan and tuning honour and other plugins may ignore.
func cniArgsMessage(specs []attachment.Spec) string {
	keyOf := map[string]string{}
	for k, arg := range planner.CNIArgOf {
		keyOf[arg] = k
	}
	var parts []string
	for _, s := range specs {
		var keys, args []string
		for _, p := range s.CNIArgs() {
			keys, args = append(keys, keyOf[p[0]]), append(args, p[0]+"="+p[1])
		}
		if len(keys) > 0 {
			parts = append(parts, fmt.Sprintf("%s (%s): %s, as %s", s.Network, s.Link(), strings.Join(keys, " and "), strings.Join(args, ";")))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "Passed in CNI_ARGS only, no plugin of the network declaring the capability (strictCapabilities refuses this): " +
		strings.Join(parts, "; ")
}

// report queues the network-status write and the AddedInterface Event.
func (d *Daemon) report(ref podRef, specs []attachment.Spec, results []*current.Result) {
	if ref.Name == "" {
		return
	}
	list, msg := Statuses(specs, results)
	value, err := netstatus.Marshal(list)
	if err != nil {
		d.Log.Error("network-status", "pod", ref, "err", err)
		return
	}
	if d.Status != nil {
		d.Status.Set(ref.Namespace, ref.Name, ref.UID, value)
	}
	d.queueNetworkData(ref, specs, results)
	if *d.Config.AddedInterfaceEvents {
		d.event(ref, kube.EventNormal, kube.ReasonAddedInterface, msg)
	}
}

// Statuses builds the network-status list of a sandbox, primary first, and
// a one-line summary for the AddedInterface Event.
func Statuses(specs []attachment.Spec, results []*current.Result) ([]netstatus.Status, string) {
	routeOwned := false
	for _, s := range specs {
		routeOwned = routeOwned || len(s.DefaultRoute) > 0
	}
	list := make([]netstatus.Status, len(specs))
	parts := make([]string, len(specs))
	for i, s := range specs {
		st := netstatus.FromResult(s.Network, s.IfName, s.Primary, results[i])
		st.Interface = s.Link()
		switch {
		case len(s.DefaultRoute) > 0:
			st.Gateway = s.DefaultRoute
		case s.Primary && !routeOwned:
			st.Gateway = gateways(results[i])
		}
		if path, ok := s.CapabilityArgs[devinfo.Capability].(string); ok {
			st.DeviceInfo, _ = devinfo.Load(path)
		}
		list[i] = st
		parts[i] = fmt.Sprintf("%s %v from %s", st.Interface, st.IPs, s.Network)
	}
	return list, "Added " + strings.Join(parts, "; ")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func gateways(r *current.Result) []string {
	var gws []string
	for _, ip := range r.IPs {
		if ip.Gateway != nil {
			gws = append(gws, ip.Gateway.String())
		}
	}
	return gws
}

func (d *Daemon) del(ctx context.Context, req *wire.Request, args [][2]string, ref podRef) error {
	if ref.Name != "" && d.Status != nil {
		d.Status.Forget(ref.Namespace, ref.Name)
	}
	d.forgetNetworkData(ref)
	err := d.Exec.Del(ctx, req.ContainerID, req.NetNS, args)
	if d.DevInfo != "" {
		err = errors.Join(err, d.DevInfo.CleanSandbox(req.ContainerID))
	}
	if err != nil {
		d.event(ref, kube.EventWarning, kube.ReasonDelIncomplete, err.Error())
	}
	return err
}

func checkVersion(v string) error {
	for _, s := range supported.SupportedVersions() {
		if s == v {
			return nil
		}
	}
	return types.NewError(types.ErrIncompatibleCNIVersion,
		fmt.Sprintf("unsupported cniVersion %q", v), "supported: "+strings.Join(supported.SupportedVersions(), ", "))
}

// errorResponse encodes err as a CNI error: a delegate's own error keeps its
// code; a configuration error is code 7; anything else 999.
func errorResponse(cniVersion string, err error) *wire.Response {
	te := &types.Error{Code: types.ErrInternal, Msg: err.Error()}
	var delegate *types.Error
	var planErr *planner.Error
	switch {
	case errors.As(err, &planErr):
		te.Code = types.ErrInvalidNetworkConfig
	case errors.As(err, &delegate):
		te.Code, te.Details = delegate.Code, delegate.Details
		if te.Msg == delegate.Error() { // not wrapped: keep msg and details apart
			te.Msg = delegate.Msg
		}
	}
	out, _ := json.Marshal(struct {
		CNIVersion string `json:"cniVersion"`
		*types.Error
	}{cniVersion, te})
	return &wire.Response{Stdout: out, ExitCode: 1}
}
