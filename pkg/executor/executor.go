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
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/steps"
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

// AttachError says which network failed and why.
type AttachError struct {
	Network, IfName string
	Err             error
}

func (a *AttachError) Error() string {
	return fmt.Sprintf("network %s (interface %s): %v", a.Network, a.IfName, a.Err)
}
func (a *AttachError) Unwrap() error { return a.Err }

// Add attaches every spec to the sandbox in order. On any failure it deletes
// what it added, removes the record and returns an *AttachError. The record
// in sb (container ID, netns, pod identity and CNI args) is completed and
// stored.
func (e *Executor) Add(ctx context.Context, sb *store.Sandbox, specs []attachment.Spec) ([]*current.Result, error) {
	unlock, err := e.LockContext(ctx, sb.ContainerID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	args := sb.Args
	if err := e.delLocked(ctx, sb.ContainerID, sb.NetNS, args); err != nil {
		return nil, fmt.Errorf("cleaning up an earlier ADD of this sandbox: %w", err)
	}
	steps.Mark(ctx, "earlier-add")
	sb.Complete, sb.Created = false, time.Now()
	sb.Attachments = make([]store.Attachment, len(specs))
	for i, s := range specs {
		sb.Attachments[i] = store.Attachment{Spec: s, State: store.Adding}
	}
	// The record naming every attachment is what a DEL after a power loss
	// needs: it becomes durable while the delegates run, and the ADD is
	// not answered before it is.
	durable, err := e.store.Prepare(sb)
	if err != nil {
		return nil, err
	}
	steps.Mark(ctx, "record")
	results, err := e.addAll(ctx, sb, args)
	if err == nil {
		err = e.fault("add:completing")
	}
	if err != nil {
		if rerr := e.rollback(ctx, sb, args); rerr != nil {
			err = fmt.Errorf("%w; rollback: %v", err, rerr)
		}
		return nil, err
	}
	// The completed record is not synced: after a power loss every sandbox
	// is gone, and a record left incomplete is rolled back at restart.
	sb.Complete = true
	err = e.store.Put(sb)
	steps.Mark(ctx, "complete-record")
	if err == nil {
		err = durable()
		steps.Mark(ctx, "wait-durable")
	}
	if err != nil {
		return nil, errors.Join(err, e.rollback(ctx, sb, args))
	}
	e.indexPod(sb)
	return results, nil
}

// addAll runs every delegate ADD: in record order, or with WithParallel
// the networks at the same time once the primary is in place (waves). The
// record written before the first one lists them all as Adding; a crash at
// any point rolls all of them back at restart, so the states and results
// are written once, with the completed record (the held-address index
// learns each result at once). The first failure (in record order) is
// returned; attachments not started by then are not attempted.
func (e *Executor) addAll(ctx context.Context, sb *store.Sandbox, args [][2]string) ([]*current.Result, error) {
	results := make([]*current.Result, len(sb.Attachments))
	var mu sync.Mutex // sb's states and results, read by Track
	errs, _ := runWaves(waves(sb, parallelFrom(ctx)), len(sb.Attachments), true, func(i int) error {
		a := &sb.Attachments[i]
		res, err := e.addOne(ctx, sb, a, args)
		if err != nil {
			return &AttachError{Network: a.Network, IfName: a.IfName, Err: err}
		}
		raw, err := leancni.EncodeResult(res)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		results[i], a.State, a.Result = res, store.Added, raw
		e.store.Track(sb)
		return nil
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if err := e.fault("add:routes"); err != nil {
		return nil, err
	}
	if err := e.Routes(sb.NetNS, sb.Specs()); err != nil {
		return nil, fmt.Errorf("default route: %w", err)
	}
	steps.Mark(ctx, "routes")
	return results, nil
}

func (e *Executor) addOne(ctx context.Context, sb *store.Sandbox, a *store.Attachment, args [][2]string) (*current.Result, error) {
	list, err := a.ConfList()
	if err != nil {
		return nil, err
	}
	if err := e.store.RememberNetwork(a.Config); err != nil {
		return nil, err
	}
	steps.Mark(ctx, "remember-network")
	if err := e.fault("add:before:" + a.IfName); err != nil {
		return nil, err
	}
	dctx, cancel := delegateContext(ctx)
	defer cancel()
	e.gcGate.RLock()
	r, err := e.cni.AddNetworkList(dctx, list, runtimeConf(sb.ContainerID, sb.NetNS, a, args))
	e.gcGate.RUnlock()
	steps.Mark(ctx, "libcni-after-exec")
	if err != nil {
		return nil, err
	}
	if err := e.fault("add:after:" + a.IfName); err != nil {
		return nil, err
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("converting result: %w", err)
	}
	if err := e.uniqueAddresses(sb, res); err != nil {
		return nil, err
	}
	steps.Mark(ctx, "result")
	return res, nil
}

// DelegateTimeout bounds one delegate call.
const DelegateTimeout = 5 * time.Minute

// delegateContext detaches a delegate call from the caller's cancellation:
// killing a plugin half-way (a runtime giving up, a daemon shutting down)
// leaves what it had made without a name DEL can find, such as macvlan's
// temporary link. A plugin may only be stopped by the long DelegateTimeout.
// The caller's cancellation stays known (callerDone) to what may give up
// before a plugin starts: the wait for a delegate slot (Limited).
func delegateContext(ctx context.Context) (context.Context, context.CancelFunc) {
	detached := context.WithValue(context.WithoutCancel(ctx), callerKey{}, ctx.Done())
	return context.WithTimeout(detached, DelegateTimeout)
}

type callerKey struct{}

// callerDone is the Done channel of the request a delegate call was
// detached from (nil: none, or one that cannot be cancelled).
func callerDone(ctx context.Context) <-chan struct{} {
	done, _ := ctx.Value(callerKey{}).(<-chan struct{})
	return done
}

// rollback deletes every attachment of a failed ADD, newest first, and the
// record once all are gone.
// It runs even when ctx was cancelled (the runtime gave up on the ADD).
func (e *Executor) rollback(ctx context.Context, sb *store.Sandbox, args [][2]string) error {
	return e.delAttachments(context.WithoutCancel(ctx), sb, sb.NetNS, args)
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
