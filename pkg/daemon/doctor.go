package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/rewire-cni/rewire/pkg/doctor"
)

// Doctor checks the node's installation: the cluster network is ready and
// answers STATUS, Rewire's CNI config is the runtime's first, the plugin
// binaries are there, and the store has no damaged record.
func (d *Daemon) Doctor(ctx context.Context) []doctor.Check {
	return []doctor.Check{d.checkNetworks(ctx), d.checkConfigFirst(), d.checkBinaries(), d.checkStore()}
}

func (d *Daemon) checkNetworks(ctx context.Context) doctor.Check {
	lists, err := d.statusLists()
	if err == nil {
		err = d.Exec.Status(ctx, lists)
	}
	return doctor.Result("cluster network", err, fmt.Sprintf("%d network(s) answer STATUS", len(lists)))
}

// checkConfigFirst: the runtime uses the first config of its conf dir
// (lexical order), which must be Rewire's.
func (d *Daemon) checkConfigFirst() doctor.Check {
	dir := d.Config.ConfDir
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	switch {
	case err != nil:
	case len(files) == 0:
		err = fmt.Errorf("no CNI config in %s", dir)
	default:
		slices.Sort(files)
		var list *libcni.NetworkConfigList
		if list, err = libcni.ConfListFromFile(files[0]); err != nil && strings.HasSuffix(files[0], ".conf") {
			var conf *libcni.NetworkConfig
			if conf, err = libcni.ConfFromFile(files[0]); err == nil {
				list, err = libcni.ConfListFromConf(conf)
			}
		}
		if err == nil && (len(list.Plugins) == 0 || list.Plugins[0].Network.Type != PluginType) {
			err = fmt.Errorf("the runtime's first CNI config is %s, not Rewire's", filepath.Base(files[0]))
		}
	}
	return doctor.Result("cni config first", err, "Rewire's config is first in "+dir)
}

// checkBinaries: the rewire plugin and the cluster network's plugins are
// in the bin dirs.
func (d *Daemon) checkBinaries() doctor.Check {
	want := []string{PluginType}
	if lists, err := d.statusLists(); err == nil {
		for _, l := range lists {
			for _, p := range l.Plugins {
				want = append(want, p.Network.Type)
			}
		}
	}
	var missing []string
	for _, t := range want {
		if _, err := invoke.FindInPath(t, d.Config.BinDirs); err != nil {
			missing = append(missing, t)
		}
	}
	var err error
	if len(missing) > 0 {
		err = fmt.Errorf("not found in %v: %s", d.Config.BinDirs, strings.Join(missing, ", "))
	}
	return doctor.Result("plugin binaries", err, strings.Join(want, ", ")+" found")
}

func (d *Daemon) checkStore() doctor.Check {
	n, err := d.Exec.Damaged()
	if err == nil && n > 0 {
		err = fmt.Errorf("%d damaged record(s) kept in the state dir's damaged/ (their attachments were deleted)", n)
	}
	records, _ := d.Exec.Records()
	return doctor.Result("store", err, fmt.Sprintf("%d sandbox record(s), none damaged", records))
}
