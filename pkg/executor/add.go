package executor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/leancni"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/reservation"
	"github.com/rewire-cni/rewire/pkg/steps"
	"github.com/rewire-cni/rewire/pkg/store"
)

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
	for i, res := range results {
		e.proxyOn(sb, resultIPs(&sb.Attachments[i], res), resultHostLinks(res), nil)
	}
	steps.Mark(ctx, "proxy")
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
		res, err := e.addStepping(ctx, sb, a, args)
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
	if err := e.uniqueAddresses(sb, a, res); err != nil {
		return nil, err
	}
	steps.Mark(ctx, "result")
	return res, nil
}

// stepOvers bounds how often addStepping asks an IPAM again.
const stepOvers = 4

// addStepping is addOne for a new sandbox, stepping over addresses held on
// this node: when the IPAM (one of two independent stores on one range,
// during a migration) hands out an address another pod here holds, that
// attempt is deleted (releasing it in that IPAM only) and the IPAM asked
// again, which host-local answers with its next free address. An attachment
// that asked for given addresses, or an IPAM that hands out the same one
// again, gets the AddressInUse error.
func (e *Executor) addStepping(ctx context.Context, sb *store.Sandbox, a *store.Attachment, args [][2]string) (*current.Result, error) {
	class := freshAlloc
	if a.CapabilityArgs["ips"] != nil {
		class = requestAlloc
	}
	defer e.allocs.lock(storeKey(a.Config), class)()
	if class == freshAlloc {
		if err := e.steer(sb, a); err != nil {
			return nil, err
		}
	}
	var last net.IP
	for try := 0; ; try++ {
		res, err := e.addOne(ctx, sb, a, args)
		var inUse *AddressInUse
		if !errors.As(err, &inUse) || try == stepOvers || class == requestAlloc || inUse.IP.Equal(last) {
			return res, err
		}
		last = inUse.IP
		e.sbLog(sb).Info("stepping over an address another pod holds", "network", a.Network, "address", inUse.IP, "holder", inUse.Holder.Pod)
		if err := e.delOne(context.WithoutCancel(ctx), sb, a, sb.NetNS, args); err != nil {
			return nil, fmt.Errorf("%w; deleting that attempt: %v", inUse, err)
		}
	}
}

// steer turns a's fresh allocation into a request for free addresses of
// its ranges when pods of other networks on the node hold addresses in
// them (independent stores on one range, as during a migration): a routed
// delegate handed one would route it away from its holder for as long as
// its ADD lasts. A network that cannot be asked is left to step over.
func (e *Executor) steer(sb *store.Sandbox, a *store.Attachment) error {
	nets, known := reservation.Ranges(a.Config)
	if !known {
		return nil
	}
	held, err := e.store.HeldIn(nets, func(h store.Holder) bool { return h.ContainerID != sb.ContainerID && h.Network != a.Network })
	if err != nil || len(held) == 0 {
		return err
	}
	list, err := a.ConfList()
	if err != nil {
		return err
	}
	how := reservation.HowToAsk(a.Config, nad.Capabilities(list)["ips"])
	if how == reservation.NoAsking {
		return nil
	}
	for try := 0; try < stepOvers; try++ {
		free, ok, err := reservation.Free(a.Config, func(ip net.IP) bool { return slices.ContainsFunc(held, ip.Equal) })
		if err != nil || !ok {
			return nil // the IPAM decides (and says so when its range is full)
		}
		ips := make([]*net.IPNet, len(free))
		for i, f := range free {
			ip, n, _ := net.ParseCIDR(f)
			ips[i] = &net.IPNet{IP: ip, Mask: n.Mask}
		}
		conflict, err := e.store.Claim(holderOf(sb, a), ipsOf(ips))
		if err != nil {
			return err
		}
		if conflict != nil {
			held = append(held, conflict.IP)
			continue
		}
		e.sbLog(sb).Debug("asking for free addresses: the node's pods hold others of the range in another store", "network", a.Network, "addresses", free)
		if how == reservation.ByCapability {
			a.CapabilityArgs = withIPs(a.CapabilityArgs, ips)
			return nil
		}
		a.Config, _, err = reservation.Ask(a.Config, free)
		return err
	}
	return nil
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
