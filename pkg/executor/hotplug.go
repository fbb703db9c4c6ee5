package executor

import (
	"context"
	"errors"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/reservation"
	"github.com/rewire-cni/rewire/pkg/store"
)

// Get returns a sandbox record (nil when none); the caller holds Lock.
func (e *Executor) Get(containerID string) (*store.Sandbox, error) {
	return e.store.Get(containerID)
}

// Head returns what the store's index keeps of a sandbox record, false when
// there is none (no lock needed, no disk read).
func (e *Executor) Head(containerID string) (store.Head, bool, error) {
	return e.store.Head(containerID)
}

// Plug adds one attachment to a running sandbox; the caller holds Lock. The
// attachment is recorded before its delegate runs; if anything fails it is
// deleted again and dropped from the record, so nothing half-plugged stays.
func (e *Executor) Plug(ctx context.Context, sb *store.Sandbox, spec attachment.Spec) (*current.Result, error) {
	if sb.Find(spec.IfName) != nil {
		return nil, fmt.Errorf("interface %s already exists", spec.IfName)
	}
	sb.Attachments = append(sb.Attachments, store.Attachment{Spec: spec, State: store.Adding})
	if err := e.store.Put(sb); err != nil {
		sb.Remove(spec.IfName)
		return nil, err
	}
	res, err := e.plugRecorded(ctx, sb, &sb.Attachments[len(sb.Attachments)-1])
	if err != nil {
		a := *sb.Find(spec.IfName)
		if derr := e.delOne(context.WithoutCancel(ctx), sb, &a, sb.NetNS, sb.Args); derr != nil {
			// Keep the record so the next DEL or reconcile tries again.
			return nil, fmt.Errorf("%w; rollback: %v", err, derr)
		}
		sb.Remove(spec.IfName)
		return nil, errors.Join(err, e.store.Put(sb))
	}
	return res, nil
}

func (e *Executor) plugRecorded(ctx context.Context, sb *store.Sandbox, a *store.Attachment) (*current.Result, error) {
	res, err := e.addOne(ctx, sb, a, sb.Args)
	if err != nil {
		return nil, err
	}
	if a.Result, err = leancni.EncodeResult(res); err != nil {
		return nil, err
	}
	a.State = store.Added
	e.proxyOn(sb, resultIPs(a, res), resultHostLinks(res), nil)
	if len(a.DefaultRoute) > 0 {
		if err := e.fault("plug:routes"); err != nil {
			return nil, err
		}
		if err := e.Routes(sb.NetNS, sb.Specs()); err != nil {
			return nil, fmt.Errorf("default route: %w", err)
		}
	}
	return res, e.store.Commit(sb)
}

// Unplug deletes one attachment with the exact config it was added with; the
// caller holds Lock. On failure the attachment stays recorded (DEL and the
// next reconcile try again).
func (e *Executor) Unplug(ctx context.Context, sb *store.Sandbox, ifName string) error {
	a := sb.Find(ifName)
	if a == nil {
		return nil
	}
	a.State = store.Deleting
	if err := e.store.Put(sb); err != nil {
		return err
	}
	if err := e.delOne(ctx, sb, a, sb.NetNS, sb.Args); err != nil {
		return &AttachError{Network: a.Network, IfName: a.IfName, Err: err}
	}
	sb.Remove(ifName)
	return e.store.Commit(sb)
}

// Retire deletes an attachment's interface and every host-side piece of it
// with the exact config it was added with, except that its IPAM releases
// nothing: the attachment stays recorded as Retained, holding the pod's
// addresses until the pod's DEL releases them (see package reservation).
// One that allocated nothing (static addresses) is dropped instead.
// The caller holds Lock. On failure it stays Retiring; calling Retire again
// finishes it. The record is written, not synced: the switch's last step
// commits it (a power loss before leaves the attachment to the pod's DEL).
func (e *Executor) Retire(ctx context.Context, sb *store.Sandbox, ifName string) error {
	a := sb.Find(ifName)
	if a == nil || a.State == store.Retained {
		return nil
	}
	a.State, a.Primary = store.Retiring, false
	// A plugin that built its delegate's IPAM (flannel) keeps it in a
	// scratch file its DEL replays: the record learns the IPAM first (to
	// release it at the pod's DEL), then the file is rewritten to hold.
	conf, err := reservation.Capture(a.Config, sb.ContainerID)
	if err != nil {
		return fmt.Errorf("network %s: %w", a.Network, err)
	}
	a.Config = conf
	if err := e.store.Put(sb); err != nil {
		return err
	}
	if err := reservation.HoldScratch(a.Config, sb.ContainerID); err != nil {
		return fmt.Errorf("network %s: %w", a.Network, err)
	}
	hold, err := reservation.Hold(a.Config)
	if err != nil {
		return fmt.Errorf("network %s: %w", a.Network, err)
	}
	held := *a
	held.Config = hold
	if err := e.delOne(ctx, sb, &held, sb.NetNS, sb.Args); err != nil {
		return &AttachError{Network: a.Network, IfName: a.IfName, Err: err}
	}
	if _, holds, _ := reservation.ReleaseOnly(a.Config); !holds {
		sb.Remove(ifName) // it allocated nothing (static addresses): nothing to keep
	} else {
		sb.Find(ifName).State = store.Retained
	}
	return e.store.Put(sb) // the switch's last step commits
}

// Reorder sorts the attachments of a record like order (interface names;
// the primary first) and commits it (durably: it ends a hot-plug or a
// switch).
func (e *Executor) Reorder(sb *store.Sandbox, order []string) error {
	sortAttachments(sb, order)
	return e.store.Commit(sb)
}

// sortAttachments puts the primary first, then the attachments named in
// order, then the others as they were.
func sortAttachments(sb *store.Sandbox, order []string) {
	rank := map[string]int{}
	for i, n := range order {
		rank[n] = i + 1
	}
	out := make([]store.Attachment, 0, len(sb.Attachments))
	for _, a := range sb.Attachments {
		if a.Primary {
			out = append(out, a)
		}
	}
	for r := 1; r <= len(order); r++ {
		for _, a := range sb.Attachments {
			if !a.Primary && rank[a.IfName] == r {
				out = append(out, a)
			}
		}
	}
	for _, a := range sb.Attachments {
		if !a.Primary && rank[a.IfName] == 0 {
			out = append(out, a)
		}
	}
	sb.Attachments = out
}
