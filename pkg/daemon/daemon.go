// Package daemon is the CNI request handler of rewired: it turns a request
// from the rewire plugin into a plan, runs it through the executor and
// queues the pod's network-status and Events, keeping every API call off the
// CNI path.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/devinfo"
	"github.com/rewire-cni/rewire/pkg/executor"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/planner"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/pkg/store"
)

// PluginType is the "type" of Rewire's own CNI config.
const PluginType = "rewire"

// Pods returns a pod by namespace, name and (optional) UID.
type Pods interface {
	Get(ctx context.Context, namespace, name string, uid ktypes.UID) (*kube.Pod, error)
}

// StatusSink receives network-status values to write.
type StatusSink interface {
	Set(namespace, name string, uid ktypes.UID, value string)
	Forget(namespace, name string)
}

// EventSink records Events on pods.
type EventSink interface {
	Pod(namespace, name string, uid ktypes.UID, eventType, reason, msg string)
}

// Devices returns a pod's allocated devices per resource name.
type Devices interface {
	Devices(ctx context.Context, namespace, name string) (map[string][]string, error)
}

// Daemon handles CNI requests.
type Daemon struct {
	Config         *config.Config
	Exec           *executor.Executor
	Pods           Pods
	Networks       planner.Lookup
	NetworksSynced func() bool
	Status         StatusSink
	Events         EventSink
	Devices        Devices
	DevInfo        devinfo.Dir
	Log            *slog.Logger
	// Claims gives devices from the pod's ResourceClaims (DRA), after the
	// device plugins'; nil: none.
	Claims ClaimDevices
	// NetworkData receives the networkData of attachments made from a
	// claim's device; nil: not written.
	NetworkData NetworkDataSink
	// APICounts reports the API requests made so far (GET /debug/api).
	APICounts func() map[string]int64
	// OnAdded is called after a successful ADD (the hot-plug reconciler
	// checks that the annotation did not change meanwhile).
	OnAdded func(namespace, name string)
	// NewPodNetwork returns the default-network a pod without that
	// annotation starts on because a NetworkMigration says so (newPods: to).
	NewPodNetwork func(pod *kube.Pod) (string, bool)
	// View returns the daemon's view of a pod (GET /debug/pods/NS/NAME).
	View func(namespace, name string) (PodView, bool)

	cluster clusterMemo
}

// annotations returns the pod's annotations as ADD plans them: with the
// default-network a migration gives a new pod that has none.
func (d *Daemon) annotations(pod *kube.Pod) map[string]string {
	if d.NewPodNetwork == nil || pod.Annotations[selection.DefaultNetworkAnnotation] != "" {
		return pod.Annotations
	}
	v, ok := d.NewPodNetwork(pod)
	if !ok {
		return pod.Annotations
	}
	out := make(map[string]string, len(pod.Annotations)+1)
	for k, val := range pod.Annotations {
		out[k] = val
	}
	out[selection.DefaultNetworkAnnotation] = v
	return out
}

// netConf is Rewire's own network config as the runtime passes it.
type netConf struct {
	CNIVersion       string                 `json:"cniVersion"`
	Name             string                 `json:"name"`
	RuntimeConfig    map[string]interface{} `json:"runtimeConfig,omitempty"`
	ValidAttachments []types.GCAttachment   `json:"cni.dev/valid-attachments,omitempty"`
}

// podRef identifies the pod of a request (from CNI_ARGS).
type podRef struct {
	Namespace, Name string
	UID             ktypes.UID
}

func (p podRef) String() string { return p.Namespace + "/" + p.Name }

// parseArgs splits CNI_ARGS ("K=V;K=V") into pairs and finds the pod.
func parseArgs(s string) ([][2]string, podRef, error) {
	var pairs [][2]string
	var ref podRef
	if s == "" {
		return nil, ref, nil
	}
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, ref, fmt.Errorf("CNI_ARGS: %q is not KEY=VALUE", kv)
		}
		pairs = append(pairs, [2]string{k, v})
		switch k {
		case "K8S_POD_NAMESPACE":
			ref.Namespace = v
		case "K8S_POD_NAME":
			ref.Name = v
		case "K8S_POD_UID":
			ref.UID = ktypes.UID(v)
		}
	}
	return pairs, ref, nil
}

// ClusterNetwork returns the cluster network's config, with its chained
// plugins (chain.go), when clusterNetwork is a path or given inline (nil
// when it names a NAD: ClusterChainLookup chains that one), or why it is
// not usable yet: also while the readiness indicator file does not exist.
func (d *Daemon) ClusterNetwork() (*libcni.NetworkConfigList, error) {
	if f := d.Config.ReadinessIndicatorFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("readiness indicator file %s: %w", f, err)
		}
	}
	return d.clusterConfig()
}

// clusterConfig is ClusterNetwork without the readiness indicator file.
func (d *Daemon) clusterConfig() (*libcni.NetworkConfigList, error) {
	cn := d.Config.ClusterNetwork
	if raw := d.Config.ClusterNetworkConfig; len(raw) > 0 {
		return d.cluster.get(d.Config.ConfDir, func() (*libcni.NetworkConfigList, error) {
			list, err := nad.ConfList(raw, cn)
			if err == nil {
				list, err = clusterChains(d.Config, list, d.Config.ConfDir)
			}
			if err != nil {
				return nil, fmt.Errorf("cluster network %s (the Multus config's delegates[0]): %w", cn, err)
			}
			return list, nil
		})
	}
	if filepath.IsAbs(cn) {
		dir := configDir(cn)
		return d.cluster.get(dir, func() (*libcni.NetworkConfigList, error) {
			list, err := nad.LoadPath(cn, PluginType)
			if err == nil {
				list, err = clusterChains(d.Config, list, dir)
			}
			if err != nil {
				return nil, fmt.Errorf("cluster network config %s: %w", cn, err)
			}
			return list, nil
		})
	}
	if d.NetworksSynced != nil && !d.NetworksSynced() {
		return nil, errors.New("NetworkAttachmentDefinition cache not synced yet")
	}
	if _, err := d.Networks(d.Config.MultusNamespace, cn); err != nil {
		return nil, fmt.Errorf("cluster network %s/%s: %w", d.Config.MultusNamespace, cn, err)
	}
	return nil, nil
}

// Ready reports whether ADD can be served.
func (d *Daemon) Ready() error {
	_, err := d.ClusterNetwork()
	return err
}

// statusLists returns the config lists STATUS checks: the cluster network
// and the default networks.
func (d *Daemon) statusLists() ([]*libcni.NetworkConfigList, error) {
	cluster, err := d.ClusterNetwork()
	if err != nil {
		return nil, err
	}
	var lists []*libcni.NetworkConfigList
	if cluster == nil {
		n, err := d.Networks(d.Config.MultusNamespace, d.Config.ClusterNetwork)
		if err != nil {
			return nil, err
		}
		cluster = n.ConfList
	}
	lists = append(lists, cluster)
	for _, name := range d.Config.DefaultNetworks {
		n, err := d.Networks(d.Config.MultusNamespace, name)
		if err != nil {
			return nil, fmt.Errorf("default network %s: %w", name, err)
		}
		lists = append(lists, n.ConfList)
	}
	return lists, nil
}

func (d *Daemon) event(ref podRef, eventType, reason, msg string) {
	if eventType == kube.EventWarning {
		metrics.Failures.Inc(reason)
	}
	if d.Events != nil && ref.Name != "" {
		d.Events.Pod(ref.Namespace, ref.Name, ref.UID, eventType, reason, msg)
	}
}

func decodeConf(raw []byte) (*netConf, error) {
	var c netConf
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decoding Rewire's network config", err.Error())
	}
	if c.CNIVersion == "" {
		c.CNIVersion = "0.3.1"
	}
	return &c, nil
}

// CatchUp re-queues the network-status of every completed sandbox whose pod
// (as cached) shows a different value: statuses lost to an API outage or a
// daemon restart are written once the API is back.
func (d *Daemon) CatchUp(sandboxes []*store.Sandbox, cached func(namespace, name string) *kube.Pod) int {
	n := 0
	for _, sb := range sandboxes {
		if !sb.Complete || sb.PodName == "" {
			continue
		}
		pod := cached(sb.PodNamespace, sb.PodName)
		if pod == nil || string(pod.UID) != sb.PodUID {
			continue
		}
		value, err := recordedStatus(sb)
		if err != nil {
			d.Log.Warn("stored results unreadable", "containerID", sb.ContainerID, "err", err)
			continue
		}
		if pod.Annotations[netstatus.Annotation] != value {
			d.Status.Set(sb.PodNamespace, sb.PodName, pod.UID, value)
			n++
		}
	}
	return n
}

// recordedStatus is the network-status annotation of a sandbox as recorded.
func recordedStatus(sb *store.Sandbox) (string, error) {
	specs, results, err := storedResults(sb)
	if err != nil {
		return "", err
	}
	list, _ := Statuses(specs, results)
	return netstatus.Marshal(list)
}

// storedResults returns the attachments that are in place (added) with
// their results; one being added or deleted right now is left out.
func storedResults(sb *store.Sandbox) ([]attachment.Spec, []*current.Result, error) {
	var specs []attachment.Spec
	var results []*current.Result
	for _, a := range sb.Attachments {
		if a.State != store.Added {
			continue
		}
		res := &current.Result{}
		if err := json.Unmarshal(a.Result, res); err != nil {
			return nil, nil, fmt.Errorf("attachment %s: %w", a.IfName, err)
		}
		specs, results = append(specs, a.Spec), append(results, res)
	}
	return specs, results, nil
}
