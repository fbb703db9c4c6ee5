package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/handover"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/reservation"
	"github.com/rewire-cni/rewire/pkg/steps"
	"github.com/rewire-cni/rewire/pkg/store"
)

// Del removes every attachment recorded for the container, whatever the
// current NADs or pod say. Every delegate is attempted; the error lists each
// that failed, and those stay recorded so a retried DEL tries them again.
// A container with no record succeeds (DEL is idempotent).
func (e *Executor) Del(ctx context.Context, containerID, netns string, args [][2]string) error {
	unlock, err := e.LockContext(ctx, containerID)
	if err != nil {
		return err
	}
	defer unlock()
	e.unindexPod(containerID)
	return e.delLocked(ctx, containerID, netns, args)
}

func (e *Executor) delLocked(ctx context.Context, containerID, netns string, args [][2]string) error {
	sb, err := e.store.Get(containerID)
	steps.Mark(ctx, "record-read")
	if errors.Is(err, store.ErrCorrupt) {
		return e.delDamaged(ctx, containerID, netns, args, err)
	}
	if err != nil {
		return err
	}
	if sb == nil {
		// Nothing recorded: a sandbox another meta plugin made (adopted
		// now, so that every attachment of it is released).
		if sb, err = e.adoptLocked(containerID, netns, "", false); err != nil {
			return fmt.Errorf("taking over a sandbox another meta plugin made: %w", err)
		}
	}
	if sb == nil {
		// Nothing recorded, but libcni may still know attachments (a record
		// lost with its directory): delete those.
		sb = &store.Sandbox{ContainerID: containerID}
	}
	e.addCached(sb)
	steps.Mark(ctx, "libcni-cache-read")
	if len(sb.Attachments) == 0 {
		if err := e.forget(sb); err != nil {
			return err
		}
		return e.store.Delete(containerID)
	}
	if netns == "" {
		netns = sb.NetNS
	}
	if args == nil {
		args = sb.Args
	}
	if sb.Switch != nil && netns != "" {
		if err := handover.Cut(netns); err != nil {
			e.sbLog(sb).Warn("removing the pin of an unfinished switch", "err", err)
		}
	}
	if err := e.delAttachments(ctx, sb, netns, args); err != nil {
		return err
	}
	err = e.forget(sb)
	steps.Mark(ctx, "forget")
	return err
}

// delAttachments deletes the attachments newest first (with WithParallel
// the networks at the same time, the primary last: delWaves), attempting
// every one, and removes the record when all are gone. Attachments that
// failed stay recorded (one write); those deleted before a crash are
// deleted again by the next DEL, which a delegate DEL must tolerate.
func (e *Executor) delAttachments(ctx context.Context, sb *store.Sandbox, netns string, args [][2]string) error {
	atts := append([]store.Attachment(nil), sb.Attachments...)
	errs, _ := runWaves(delWaves(sb, parallelFrom(ctx)), len(atts), false, func(i int) error {
		if err := e.delOne(ctx, sb, &atts[i], netns, args); err != nil {
			return &AttachError{Network: atts[i].Network, IfName: atts[i].IfName, Err: err}
		}
		return nil
	})
	var failed []error
	var kept []store.Attachment
	for i := len(atts) - 1; i >= 0; i-- { // reported newest first, as deleted
		if errs[i] != nil {
			failed = append(failed, errs[i])
			kept = append([]store.Attachment{atts[i]}, kept...)
		}
	}
	if len(failed) > 0 {
		sb.Attachments = kept
		return errors.Join(append(failed, e.store.Put(sb))...)
	}
	e.undoHostChanges(sb) // a crash before the record goes undoes them again
	steps.Mark(ctx, "host-changes")
	err := e.store.Delete(sb.ContainerID)
	steps.Mark(ctx, "record-delete")
	return err
}

func (e *Executor) delOne(ctx context.Context, sb *store.Sandbox, a *store.Attachment, netns string, args [][2]string) error {
	if a.State == store.Retained {
		return e.release(ctx, sb, a, args)
	}
	list, err := a.ConfList()
	if err != nil {
		return err
	}
	if err := e.fault("del:before:" + a.IfName); err != nil {
		return err
	}
	if a.LinkName != "" && a.LinkName != a.IfName && netns != "" {
		// The plugin finds its interface by the name it created it with.
		if err := handover.Rename(netns, a.LinkName, a.IfName); err != nil {
			e.sbLog(sb).Warn("renaming interface back before DEL", "interface", a.LinkName, "err", err)
		}
	}
	dctx, cancel := delegateContext(ctx)
	defer cancel()
	err = e.cni.DelNetworkList(dctx, list, runtimeConf(sb.ContainerID, netns, a, args))
	steps.Mark(ctx, "libcni-after-exec")
	if err != nil {
		return err
	}
	return e.fault("del:after:" + a.IfName)
}

// release frees what a Retained attachment still holds: its IPAM's
// reservation of the pod's addresses. Its interface is long gone (and its
// name may be another attachment's now), so only the IPAM plugins are
// called, without a netns.
func (e *Executor) release(ctx context.Context, sb *store.Sandbox, a *store.Attachment, args [][2]string) error {
	conf, ok, err := reservation.ReleaseOnly(a.Config)
	if err != nil || !ok {
		return err
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return fmt.Errorf("network %s: IPAM release config: %w", a.Network, err)
	}
	if err := e.fault("release:" + a.IfName); err != nil {
		return err
	}
	dctx, cancel := delegateContext(ctx)
	defer cancel()
	return e.cni.DelNetworkList(dctx, list, runtimeConf(sb.ContainerID, "", a, args))
}

// addCached appends the attachments libcni's cache holds for the sandbox
// that the record does not list (same network name and interface).
func (e *Executor) addCached(sb *store.Sandbox) {
	known := map[[2]string]bool{}
	for _, a := range sb.Attachments {
		if l, err := a.ConfList(); err == nil {
			known[[2]string{l.Name, a.IfName}] = true
		}
	}
	if !e.cacheMayAdd(sb.ContainerID, known) {
		return
	}
	cached, err := e.cni.GetCachedAttachments(sb.ContainerID)
	if err != nil {
		e.sbLog(sb).Warn("reading libcni cache", "err", err)
		return
	}
	for _, c := range cached {
		if known[[2]string{c.Network, c.IfName}] {
			continue
		}
		if sb.NetNS == "" {
			sb.NetNS = c.NetNS
		}
		sb.Attachments = append(sb.Attachments, store.Attachment{
			Spec:  attachment.Spec{Network: c.Network, IfName: c.IfName, Config: c.Config, CapabilityArgs: c.CapabilityArgs},
			State: store.Added,
		})
	}
}

// cacheMayAdd reports whether libcni's cache may hold an attachment of the
// container that known (network name, interface) does not list: whether
// CacheDir is unknown or has a file of the container's that known does not
// name (libcni names them "<network>-<container ID>-<interface>"). The
// files named are not read.
func (e *Executor) cacheMayAdd(containerID string, known map[[2]string]bool) bool {
	names, err := e.cacheNames(containerID)
	if err != nil {
		return true
	}
	part := "-" + containerID + "-"
	for _, n := range names {
		if net, ifName, ok := strings.Cut(n, part); ok && !known[[2]string{net, ifName}] {
			return true
		}
	}
	return false
}

// cacheNames returns the names in libcni's cache that may be the
// container's: from Cache, or read from CacheDir (an error: neither).
func (e *Executor) cacheNames(containerID string) ([]string, error) {
	if e.Cache != nil {
		return e.Cache.CachedNames(containerID)
	}
	if e.CacheDir == "" {
		return nil, errors.New("no cache dir")
	}
	return leancni.ResultNames(e.CacheDir)
}

// delDamaged handles a record that cannot be decoded: it deletes every
// attachment libcni's cache identifies, then moves the damaged record aside
// so that the pod can go away, reporting what could not be identified.
func (e *Executor) delDamaged(ctx context.Context, containerID, netns string, args [][2]string, cause error) error {
	sb := &store.Sandbox{ContainerID: containerID, NetNS: netns}
	e.addCached(sb)
	e.log.Error("damaged store record: deleting what libcni's cache identifies",
		"containerID", containerID, "identified", len(sb.Attachments), "err", cause)
	if netns == "" {
		netns = sb.NetNS
	}
	if err := e.store.Quarantine(containerID); err != nil {
		return err
	}
	if err := e.delAttachments(ctx, sb, netns, args); err != nil {
		return fmt.Errorf("damaged record (%v): %w", cause, err)
	}
	return nil
}

// GC deletes every recorded sandbox that is not in valid (the runtime's
// list of its live attachments of Rewire's network), then runs GC on every
// delegate network ever used with the attachments still recorded as valid.
func (e *Executor) GC(ctx context.Context, valid []types.GCAttachment) error {
	live := map[string]bool{}
	for _, v := range valid {
		live[v.ContainerID] = true
	}
	ids, err := e.store.IDs()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if live[id] {
			continue
		}
		if err := e.Del(ctx, id, "", nil); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
		}
	}
	return errors.Join(append(errs, e.gcNetworks(ctx))...)
}

// gcNetworks calls GC on each remembered network with the attachments the
// store still holds for it, and forgets networks no sandbox uses any more.
// No delegate ADD runs meanwhile (gcGate): every attachment is recorded
// before its ADD, so the snapshot holds every lease that exists.
func (e *Executor) gcNetworks(ctx context.Context) error {
	e.gcGate.Lock()
	defer e.gcGate.Unlock()
	inUse, err := e.attachmentsByNetwork()
	if err != nil {
		return err
	}
	nets, err := e.store.Networks()
	if err != nil {
		return err
	}
	var errs []error
	for key, raw := range nets {
		list, err := libcni.ConfListFromBytes(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("remembered network %s: %w", key, err))
			continue
		}
		if err := e.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: inUse[list.Name]}); err != nil {
			errs = append(errs, fmt.Errorf("GC of network %s: %w", list.Name, err))
			continue
		}
		if len(inUse[list.Name]) == 0 {
			_ = e.store.ForgetNetwork(key)
		}
	}
	return errors.Join(errs...)
}

func (e *Executor) attachmentsByNetwork() (map[string][]types.GCAttachment, error) {
	ids, err := e.store.IDs()
	if err != nil {
		return nil, err
	}
	out := map[string][]types.GCAttachment{}
	for _, id := range ids {
		// No sandbox lock: records are replaced atomically, and an ADD
		// holding one may be waiting for gcGate.
		sb, err := e.store.Get(id)
		if err != nil || sb == nil {
			continue
		}
		for _, a := range sb.Attachments {
			if l, err := a.ConfList(); err == nil {
				out[l.Name] = append(out[l.Name], types.GCAttachment{ContainerID: id, IfName: a.IfName})
			}
		}
	}
	return out, nil
}

func versionLess(a, b string) (bool, error) {
	ge, err := version.GreaterThanOrEqualTo(a, b)
	return !ge, err
}
