// Package executor runs delegate CNI plugins through libcni for the
// attachments of a sandbox, recording each step in the store so that no
// attachment is ever lost track of: ADD rolls back on failure, DEL works from
// the store (and libcni's cache when the record is damaged), GC covers every
// network ever attached.
package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/store"
)

// Executor applies attachments to sandboxes. It is safe for concurrent use:
// operations on one sandbox are serialised, different sandboxes run in
// parallel.
type Executor struct {
	cni   libcni.CNI
	store *store.Store
	locks keyedMutex
	log   *slog.Logger
	// Fault, when set, is called at every named step and may fail it
	// (tests inject crashes and delegate failures through it).
	Fault func(step string) error
	// Routes applies default-route ownership inside the pod netns.
	Routes func(netns string, specs []attachment.Spec) error
	// Foreign, when set, is the state another meta plugin (Multus) left
	// for sandboxes Rewire takes over (adopt.go).
	Foreign Foreign
	// CacheDir, when set, is cni's cache dir: the names of its files tell
	// whether it knows attachments a record does not list before any of
	// them is read.
	CacheDir string
	// Cache, when set, knows those names without reading CacheDir.
	Cache CacheIndex
	// BinDirs are the delegates' plugin directories: a switch that keeps
	// the old network's addresses reserved needs the static IPAM plugin
	// there (none: not checked).
	BinDirs []string

	podsMu sync.Mutex
	pods   map[string]*store.Sandbox // pod UID -> its newest completed sandbox

	// gcGate keeps delegate ADDs (read side) and the GC of delegate
	// networks (write side) apart: GC's list of valid attachments is
	// snapshotted from the records, so a lease made while it runs (a
	// hot-plug, a switch) would look stale to it.
	gcGate sync.RWMutex
	// allocs keeps fresh and requested allocations of one IPAM store apart.
	allocs allocLocks
	// hostMu orders the changes of shared bridge sysctls with the records
	// that say which sandboxes need them (hostchanges.go).
	hostMu sync.Mutex
}

// CacheIndex knows the names of the files in cni's cache (leancni.CNI).
type CacheIndex interface {
	// CachedNames returns the names of a container's cache files.
	CachedNames(containerID string) ([]string, error)
	// Forget is told that files were written into the cache past cni.
	Forget()
}

// New returns an executor delegating through cni and recording in st.
func New(cni libcni.CNI, st *store.Store, log *slog.Logger) *Executor {
	return &Executor{cni: cni, store: st, log: log, Routes: ApplyDefaultRoute, pods: map[string]*store.Sandbox{}}
}

// ByPod returns the container ID of the pod's newest completed sandbox, or "".
func (e *Executor) ByPod(uid string) string {
	e.podsMu.Lock()
	defer e.podsMu.Unlock()
	if sb := e.pods[uid]; sb != nil {
		return sb.ContainerID
	}
	return ""
}

// indexPod makes sb its pod's sandbox unless a newer one is indexed (a
// restart indexes the records in no useful order; a pod may have an old
// sandbox whose DEL did not come yet).
func (e *Executor) indexPod(sb *store.Sandbox) {
	if sb.PodUID == "" {
		return
	}
	e.podsMu.Lock()
	defer e.podsMu.Unlock()
	if cur := e.pods[sb.PodUID]; cur != nil && cur.ContainerID != sb.ContainerID && cur.Created.After(sb.Created) {
		return
	}
	e.pods[sb.PodUID] = &store.Sandbox{ContainerID: sb.ContainerID, Created: sb.Created}
}

func (e *Executor) unindexPod(containerID string) {
	e.podsMu.Lock()
	for uid, sb := range e.pods {
		if sb.ContainerID == containerID {
			delete(e.pods, uid)
		}
	}
	e.podsMu.Unlock()
}

// Lock serialises work on one sandbox; callers outside the executor (the
// hot-plug reconciler) use it to never interleave with CNI requests.
func (e *Executor) Lock(containerID string) (unlock func()) { return e.locks.lock(containerID) }

// sbLog is the logger of operations on a sandbox: every line names the pod
// and the container.
func (e *Executor) sbLog(sb *store.Sandbox) *slog.Logger {
	return e.log.With("pod", sb.PodNamespace+"/"+sb.PodName, "containerID", sb.ContainerID)
}

func (e *Executor) fault(step string) error {
	if e.Fault == nil {
		return nil
	}
	return e.Fault(step)
}

// Recover finishes what a crash interrupted, before requests are served: an
// ADD never marked complete is rolled back (the runtime saw it fail), and a
// hot-plug or unplug caught mid-way is undone (the reconcile redoes it). It
// also rebuilds the pod index, and adopts the sandboxes of the Foreign state
// that have no record.
func (e *Executor) Recover(ctx context.Context) (int, error) {
	ids, err := e.store.IDs()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		sb, err := e.store.Get(id)
		if err != nil || sb == nil {
			continue // a damaged record is handled by the next DEL or GC
		}
		if !sb.Complete {
			n++
			e.sbLog(sb).Info("rolling back interrupted ADD", "attachments", len(sb.Attachments))
			if err := e.Del(ctx, id, sb.NetNS, sb.Args); err != nil {
				errs = append(errs, fmt.Errorf("container %s: %w", id, err))
			}
			continue
		}
		if sb.Switch != nil {
			n++
			var draining *Draining
			if err := e.ResumeSwitch(ctx, sb); err != nil && !errors.As(err, &draining) {
				errs = append(errs, fmt.Errorf("container %s: %w", id, err))
				e.indexPod(sb)
				continue
			}
		}
		for _, a := range sb.Specs() {
			if st := sb.Find(a.IfName).State; st == store.Retiring {
				if err := e.Retire(ctx, sb, a.IfName); err != nil {
					errs = append(errs, fmt.Errorf("container %s: %w", id, err))
				}
			} else if st != store.Added {
				n++
				e.sbLog(sb).Info("undoing interrupted hot-plug", "interface", a.IfName, "state", st)
				if err := e.Unplug(ctx, sb, a.IfName); err != nil {
					errs = append(errs, fmt.Errorf("container %s: %w", id, err))
				}
			}
		}
		e.indexPod(sb)
	}
	if _, err := e.AdoptAll(ctx); err != nil { // sandboxes another meta plugin made
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// Damaged returns the number of records quarantined as damaged.
func (e *Executor) Damaged() (int, error) { return e.store.Damaged() }

// Records returns the number of sandbox records in the store.
func (e *Executor) Records() (int, error) {
	ids, err := e.store.IDs()
	return len(ids), err
}

// Sandboxes returns every decodable record (for status catch-up and tools).
func (e *Executor) Sandboxes() ([]*store.Sandbox, error) {
	ids, err := e.store.IDs()
	if err != nil {
		return nil, err
	}
	var out []*store.Sandbox
	for _, id := range ids {
		if sb, err := e.store.Get(id); err == nil && sb != nil {
			out = append(out, sb)
		}
	}
	return out, nil
}

func runtimeConf(containerID, netns string, a *store.Attachment, args [][2]string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         a.IfName,
		Args:           args,
		CapabilityArgs: a.CapabilityArgs,
	}
}

// ErrNoRecord is returned by Check when the sandbox has no record.
var ErrNoRecord = errors.New("no attachments recorded for this container")

// Check runs CHECK for every attachment of a completed sandbox.
func (e *Executor) Check(ctx context.Context, containerID, netns string, args [][2]string) error {
	unlock, err := e.LockContext(ctx, containerID)
	if err != nil {
		return err
	}
	defer unlock()
	sb, err := e.store.Get(containerID)
	if err != nil {
		return err
	}
	if sb == nil || !sb.Complete {
		return ErrNoRecord
	}
	if netns == "" {
		netns = sb.NetNS
	}
	var errs []error
	for i := range sb.Attachments {
		a := &sb.Attachments[i]
		if a.State == store.Retained {
			continue // no interface: only a reservation
		}
		list, err := a.ConfList()
		switch {
		case err != nil:
		case a.LinkName != "" && a.LinkName != a.IfName:
			// The plugin would look for its own name: check what it made.
			err = handover.HasAddresses(netns, a.LinkName, podIPs(a))
		default:
			err = e.cni.CheckNetworkList(ctx, list, runtimeConf(containerID, netns, a, args))
		}
		if err != nil && !unsupportedCheck(list) {
			errs = append(errs, &AttachError{Network: a.Network, IfName: a.IfName, Err: err})
		}
	}
	return errors.Join(errs...)
}

// unsupportedCheck: configs before 0.4.0 have no CHECK; libcni refuses them.
func unsupportedCheck(list *libcni.NetworkConfigList) bool {
	if list == nil {
		return false
	}
	old, _ := versionLess(list.CNIVersion, "0.4.0")
	return old || list.DisableCheck
}

// Status runs STATUS on each config list; the first failure is returned with
// the plugin's own error code.
func (e *Executor) Status(ctx context.Context, lists []*libcni.NetworkConfigList) error {
	for _, l := range lists {
		if err := e.cni.GetStatusNetworkList(ctx, l); err != nil {
			var te *types.Error
			if errors.As(err, &te) {
				te.Msg = fmt.Sprintf("network %s: %s", l.Name, te.Msg)
				return te
			}
			return fmt.Errorf("network %s: %w", l.Name, err)
		}
	}
	return nil
}
