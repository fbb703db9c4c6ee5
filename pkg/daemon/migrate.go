package daemon

import (
	"strings"

	"github.com/containernetworking/cni/libcni"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/reservation"
)

// MigrationNode gives the NetworkMigration controller what it needs from
// this daemon: the node's pods, their recorded primaries, and the switch
// reconciler's verdicts.
func (d *Daemon) MigrationNode(name string, labels map[string]string, pods *kube.Pods, namespaces *kube.Namespaces, rec *Reconciler) migration.Node {
	return migration.Node{
		Name: name, Labels: labels, MultusNamespace: d.Config.MultusNamespace, Pods: pods.List, Patch: pods.Patch, NamespaceLabels: namespaces.Labels,
		Primary: d.recordedPrimary, ClusterKey: d.clusterKey, CanOwn: d.canOwn, Rejected: rec.Rejected, Log: d.Log,
	}
}

// recordedPrimary returns the network of the pod's recorded primary (from
// the store's index: the migration controller asks for every pod at every
// step); false while a switch of it has not ended, so that a pod counts as
// switched, and stops counting against maxConcurrentPerNode, only once A
// is retired.
func (d *Daemon) recordedPrimary(uid ktypes.UID) (string, bool) {
	cid := d.Exec.ByPod(string(uid))
	if cid == "" {
		return "", false
	}
	h, ok, err := d.Exec.Head(cid)
	if err != nil || !ok || !h.Complete || h.Primary == "" || h.Switching {
		return "", false
	}
	return h.Primary, true
}

// clusterKey is the network key the cluster network is recorded under.
func (d *Daemon) clusterKey() string {
	if list, err := d.clusterConfig(); err == nil && list != nil {
		return list.Name
	}
	return d.Config.MultusNamespace + "/" + d.Config.ClusterNetwork
}

// canOwn reports whether a network (key) can be asked for a pod's IP (its
// "ips" capability, or flannel's own way), and an error when the network
// cannot be loaded.
func (d *Daemon) canOwn(key string) (bool, error) {
	var list *libcni.NetworkConfigList
	if key == d.clusterKey() {
		list, _ = d.clusterConfig()
	}
	if list == nil {
		ns, name, _ := strings.Cut(key, "/")
		n, err := d.Networks(ns, name)
		if err != nil {
			return false, err
		}
		list = n.ConfList
	}
	return reservation.HowToAsk(list.Bytes, nad.Capabilities(list)["ips"]) != reservation.NoAsking, nil
}
