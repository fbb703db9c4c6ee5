package daemon

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"

	"github.com/rewire-cni/rewire/pkg/config"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/planner"
)

// The cluster network's chained plugins: those of the directory named like
// the network next to its config file, then those of the auxiliary chain
// (auxiliaryCNIChainName) in the same directory, appended to its own
// plugins (nad.WithChains). They are read at every ADD and switch, as the
// config file itself is, and the attachment records the whole chain, so its
// DEL runs what its ADD ran whatever the directories hold by then.

// clusterChains appends the plugins chained to the cluster network from
// dir, the directory its config is in.
func clusterChains(cfg *config.Config, list *libcni.NetworkConfigList, dir string) (*libcni.NetworkConfigList, error) {
	return nad.WithChains(list, dir, cfg.AuxiliaryCNIChainName)
}

// configDir is the directory of the cluster network's config when
// clusterNetwork is a path: the path itself when it is a directory (the
// config is its first file), else the file's directory.
func configDir(path string) string {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return path
	}
	return filepath.Dir(path)
}

// ClusterChainLookup wraps the NAD lookup so that the cluster network, when
// clusterNetwork names a NAD, comes with its chained plugins from confDir
// (where such a NAD without spec.config finds its file). Every use of that
// NAD gets them: ADD, STATUS, a switch back to the cluster network and a
// default-network annotation naming it. Other NADs are as lookup returns
// them.
func ClusterChainLookup(cfg *config.Config, lookup planner.Lookup) planner.Lookup {
	if len(cfg.ClusterNetworkConfig) > 0 || filepath.IsAbs(cfg.ClusterNetwork) {
		return lookup // the cluster network is no NAD (clusterConfig)
	}
	return func(namespace, name string) (*planner.Network, error) {
		n, err := lookup(namespace, name)
		if err != nil || namespace != cfg.MultusNamespace || name != cfg.ClusterNetwork {
			return n, err
		}
		list, err := clusterChains(cfg, n.ConfList, cfg.ConfDir)
		if err != nil {
			return nil, fmt.Errorf("NetworkAttachmentDefinition %s: %w", n.Key, err)
		}
		chained := *n // the lookup's Network may be memoised: never changed
		chained.ConfList = list
		return &chained, nil
	}
}
