package executor

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/rewire-cni/rewire/pkg/store"
)

// Foreign is the state another meta plugin (Multus) left for the sandboxes
// it networked before Rewire took the node over. The executor adopts such a
// sandbox, building a record of its own from that state, when it has none:
// at Recover (every one), on a DEL (which then releases every attachment)
// and when the hot-plug reconciler first sees its pod (AdoptPod). The
// foreign state of an adopted sandbox is removed once it is deleted.
type Foreign interface {
	// IDs lists the container IDs the foreign state has sandboxes for: of
	// one pod when podUID is given, else all.
	IDs(podUID string) ([]string, error)
	// Sandbox builds the record of a sandbox from the foreign state (nil
	// when it has none), with Adopted set. netns is the runtime's when a
	// request gives it, networkStatus the pod's annotation when known.
	Sandbox(containerID, netns, networkStatus string) (*store.Sandbox, error)
	// Forget removes the foreign state of a sandbox Rewire deleted.
	Forget(containerID string) error
}

// adoptLocked makes the record of a sandbox the foreign state knows and the
// store does not (nil when neither has one); the caller holds its lock.
// The record is durable before it is returned (not indexed: a DEL adopts
// what it deletes). With live, a sandbox whose netns is gone is not adopted
// (files Multus left behind: its addresses would block other pods' ADDs);
// a DEL adopts whatever it finds, to release it.
func (e *Executor) adoptLocked(containerID, netns, networkStatus string, live bool) (*store.Sandbox, error) {
	if e.Foreign == nil {
		return nil, nil
	}
	sb, err := e.Foreign.Sandbox(containerID, netns, networkStatus)
	if e.Cache != nil && (sb != nil || err != nil) {
		e.Cache.Forget() // it copied libcni's cache files of the sandbox
	}
	if err != nil || sb == nil {
		return nil, err
	}
	if live {
		if _, err := os.Stat(sb.NetNS); sb.NetNS == "" || err != nil {
			e.sbLog(sb).Info("not adopting a sandbox another meta plugin left: its network namespace is gone", "from", sb.Adopted, "netns", sb.NetNS)
			return nil, nil
		}
	}
	for _, a := range sb.Attachments {
		if err := e.store.RememberNetwork(a.Config); err != nil { // GC reaches it
			return nil, err
		}
	}
	if err := e.store.Commit(sb); err != nil {
		return nil, err
	}
	e.sbLog(sb).Info("adopted a sandbox another meta plugin made", "from", sb.Adopted, "attachments", len(sb.Attachments), "netns", sb.NetNS)
	return sb, nil
}

// adopt takes one sandbox over unless the store has a record of it.
func (e *Executor) adopt(ctx context.Context, containerID, networkStatus string) (bool, error) {
	unlock, err := e.LockContext(ctx, containerID)
	if err != nil {
		return false, err
	}
	defer unlock()
	if sb, err := e.store.Get(containerID); err != nil || sb != nil {
		return false, err // a damaged record is the next DEL's
	}
	sb, err := e.adoptLocked(containerID, "", networkStatus, true)
	if sb == nil {
		return false, err
	}
	e.indexPod(sb)
	return true, nil
}

// AdoptAll adopts every sandbox of the foreign state that has no record
// (rewired's start, before requests are served). One that cannot be read
// is reported and left to its DEL.
func (e *Executor) AdoptAll(ctx context.Context) (int, error) {
	if e.Foreign == nil {
		return 0, nil
	}
	ids, err := e.Foreign.IDs("")
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		ok, err := e.adopt(ctx, id, "")
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
		}
		if ok {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// AdoptPod adopts the pod's sandboxes of the foreign state that have no
// record (a pod the hot-plug reconciler sees for the first time) and
// returns the container ID of its newest sandbox ("" when it has none).
// networkStatus is the pod's network-status annotation.
func (e *Executor) AdoptPod(ctx context.Context, podUID, networkStatus string) (string, error) {
	if e.Foreign == nil || podUID == "" {
		return "", nil
	}
	ids, err := e.Foreign.IDs(podUID)
	if err != nil {
		return "", err
	}
	var errs []error
	for _, id := range ids {
		if _, err := e.adopt(ctx, id, networkStatus); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
		}
	}
	return e.ByPod(podUID), errors.Join(errs...)
}

// forget removes the foreign state of a deleted adopted sandbox. A failure
// fails the DEL: left there, the files would be adopted again as a live
// sandbox; the runtime's next DEL adopts them, deletes again (a delegate DEL
// tolerates that) and retries.
func (e *Executor) forget(sb *store.Sandbox) error {
	if e.Foreign == nil || sb.Adopted == "" {
		return nil
	}
	if err := e.Foreign.Forget(sb.ContainerID); err != nil {
		return fmt.Errorf("every attachment is released; removing the files of %s: %w", sb.Adopted, err)
	}
	return nil
}
