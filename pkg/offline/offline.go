// Package offline deletes a sandbox's attachments without the daemon: the
// rewire plugin runs rewired's copy in the CNI bin dir (rewire-offline) for
// a DEL when no daemon listens, after Rewire was uninstalled from a node or
// before it started, so that pods stay deletable and nothing leaks. It works
// from the on-disk store alone, with the delegates found in CNI_PATH, exactly
// as the daemon's DEL does.
package offline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/executor"
	"github.com/rewire-cni/rewire/pkg/multuscache"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/store"
	"github.com/rewire-cni/rewire/pkg/wire"
	"github.com/rewire-cni/rewire/pkg/writebehind"
)

// DefaultStateDir is rewired's state dir on the host.
const DefaultStateDir = "/var/lib/rewire"

type netConf struct {
	CNIVersion string `json:"cniVersion"`
	StateDir   string `json:"stateDir"`
}

// Del serves a CNI DEL from the store: what to print and the exit code.
func Del(getenv func(string) string, stdin io.Reader) ([]byte, int) {
	var conf netConf
	raw, err := io.ReadAll(stdin)
	if err == nil {
		err = json.Unmarshal(raw, &conf)
	}
	if err != nil {
		return cniError("1.1.0", types.ErrDecodingFailure, "decoding network config", err.Error()), 1
	}
	if cmd := getenv("CNI_COMMAND"); cmd != "DEL" {
		return cniError(conf.CNIVersion, types.ErrTryAgainLater, "try again later: rewired is not running (only DEL works without it)", cmd), 1
	}
	if conf.StateDir == "" {
		conf.StateDir = DefaultStateDir
	}
	req := wire.Request{ContainerID: getenv("CNI_CONTAINERID"), IfName: getenv("CNI_IFNAME"), NetNS: getenv("CNI_NETNS")}
	if req.ContainerID == "" {
		return cniError(conf.CNIVersion, types.ErrInvalidEnvironmentVariables, "missing CNI_CONTAINERID", ""), 1
	}
	if err := req.Validate(); err != nil {
		return cniError(conf.CNIVersion, types.ErrInvalidEnvironmentVariables, err.Error(), ""), 1
	}
	err = del(conf.StateDir, getenv("CNI_PATH"), req)
	if errors.Is(err, store.ErrLocked) {
		return cniError(conf.CNIVersion, types.ErrTryAgainLater, "try again later: rewired is starting", err.Error()), 1
	}
	if err != nil {
		return cniError(conf.CNIVersion, types.ErrInternal,
			"DEL without rewired: not released (still recorded, retried by the next DEL)", err.Error()), 1
	}
	return nil, 0
}

// del deletes the sandbox's recorded attachments. The delegates run through
// nad.GuardExec: a record naming Rewire's own plugin (written by an older
// version) must not make this DEL run the plugin, which would run this DEL
// again, one process deeper each time; such an attachment fails, stays
// recorded and is named in the error.
func del(stateDir, cniPath string, req wire.Request) error {
	if err := store.Exists(stateDir); err != nil {
		return fmt.Errorf("%w (the network config's stateDir must be rewired's --state-dir)", err)
	}
	unlock, err := store.LockDir(stateDir, false)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := store.New(stateDir, true) // the one writer now: replays the journal
	if err != nil {
		return err
	}
	exec := nad.GuardExec(&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}})
	cacheDir := store.CacheDir(stateDir)
	// libcni's cache files rewired had not written when it stopped.
	cacheFiles, err := writebehind.Open(store.CacheJournal(stateDir))
	if err != nil {
		return fmt.Errorf("libcni's cache: %w", err)
	}
	if err := cacheFiles.Close(); err != nil {
		return err
	}
	cni := attachment.WithCNIArgs(libcni.NewCNIConfigWithCacheDir(filepath.SplitList(cniPath), cacheDir, exec))
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ex := executor.New(cni, st, log)
	// A pod Multus networked before the takeover, deleted before rewired
	// first ran: released from Multus's state (its default cniDir).
	ex.Foreign = multuscache.Source{Dir: multuscache.DefaultDir, CacheDir: cacheDir}
	ex.CacheDir = cacheDir
	return errors.Join(ex.Del(context.Background(), req.ContainerID, req.NetNS, nil), st.Flush())
}

func cniError(cniVersion string, code uint, msg, details string) []byte {
	out, _ := json.Marshal(struct {
		CNIVersion string `json:"cniVersion"`
		*types.Error
	}{cniVersion, &types.Error{Code: code, Msg: msg, Details: details}})
	return out
}
