// Package selfgc releases the attachments of pod sandboxes the container
// runtime no longer has. containerd never calls CNI GC, so a sandbox whose
// CNI DEL never came (a runtime crash, a node reboot that lost the
// runtime's state, a forced removal) would hold its addresses, interfaces
// and record forever. The runtime's own DEL stays the primary path; this is
// the safety net behind it.
//
// It is conservative. Nothing is released when the runtime cannot be asked,
// answers with no sandbox at all, or does not list rewired's own pod; a
// record whose sandbox the runtime lists in any state is kept, and so is a
// record younger than the grace period, one of an ADD still running, and
// one not made for a Kubernetes pod (the runtime's list does not cover it).
package selfgc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/store"
)

// Sandbox is a pod sandbox as the container runtime lists it.
type Sandbox struct {
	ID, Namespace, Name, UID string
}

// Lister lists every pod sandbox the container runtime has, in any state.
type Lister interface {
	ListSandboxes(ctx context.Context) ([]Sandbox, error)
}

// EventSink records Events on pods.
type EventSink interface {
	Pod(namespace, name string, uid ktypes.UID, eventType, reason, msg string)
}

// Collector finds the records of sandboxes the runtime no longer has and
// releases them. Collect and Run are not for concurrent use.
type Collector struct {
	Lister Lister
	// Records returns Rewire's sandbox records.
	Records func() ([]*store.Sandbox, error)
	// Release releases a record's sandbox as the runtime's DEL would and
	// reports whether it did (false: gone or replaced meanwhile).
	Release func(ctx context.Context, sb *store.Sandbox) (bool, error)
	// Grace: a record younger than this is never released.
	Grace time.Duration
	// DryRun only logs and counts what would be released.
	DryRun bool
	// SelfNamespace and SelfName are rewired's own pod when it runs in
	// one: the runtime must list it, or its answer is not trusted (not the
	// kubelet's runtime).
	SelfNamespace, SelfName string
	// PodExists says whether a record's pod object still exists; Events
	// then go on it, otherwise there is only the log line.
	PodExists func(namespace, name, uid string) bool
	Events    EventSink
	Log       *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	firstSeen map[string]time.Time // records without a creation time
	reported  map[string]bool      // dry run: stale sandboxes already reported
	answered  bool                 // the last pass's runtime answer was trusted
}

// Result is what one pass found, by container ID.
type Result struct {
	// Released: every attachment released.
	Released []string
	// Failed: the release failed (retried at the next pass).
	Failed []string
	// Stale: released or not, every record the pass found stale (in a dry
	// run, what would be released).
	Stale []string
}

// Run runs a pass at once, then one every interval until ctx ends.
func (c *Collector) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := c.Collect(ctx); err != nil && ctx.Err() == nil {
			c.Log.Warn("self-GC pass skipped, nothing released", "err", err,
				"hint", `criSocket must be the kubelet's CRI runtime ("off": no self-GC)`)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Collect runs one pass. The records are read before the runtime is
// asked, so a recorded sandbox that exists is in its answer (but for the
// moment between an ADD's answer and the runtime storing its sandbox,
// which the grace period covers). An error means nothing was released.
func (c *Collector) Collect(ctx context.Context) (Result, error) {
	records, err := c.Records()
	if err != nil {
		metrics.SelfGCRuns.Inc("error")
		return Result{}, fmt.Errorf("reading the records: %w", err)
	}
	live, err := c.live(ctx)
	if err != nil {
		c.answered = false
		metrics.SelfGCRuns.Inc("error")
		return Result{}, err
	}
	if !c.answered {
		c.answered = true
		c.Log.Info("self-GC: the runtime answers", "sandboxes", len(live), "records", len(records))
	}
	now := c.now()
	c.note(records, now)
	var res Result
	for _, sb := range records {
		if ctx.Err() != nil {
			break
		}
		if c.stale(sb, live, now) {
			c.collect(ctx, sb, &res)
		}
	}
	metrics.SelfGCRuns.Inc("ok")
	return res, nil
}

// live asks the runtime for its sandboxes, by ID, and checks that the
// answer can be trusted.
func (c *Collector) live(ctx context.Context) (map[string]bool, error) {
	list, err := c.Lister.ListSandboxes(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the runtime's pod sandboxes: %w", err)
	}
	if len(list) == 0 {
		return nil, errors.New("the runtime lists no pod sandbox at all: not trusted (not the kubelet's runtime, or it lost its state)")
	}
	live := make(map[string]bool, len(list))
	self := c.SelfName == ""
	for _, s := range list {
		live[s.ID] = true
		self = self || s.Namespace == c.SelfNamespace && s.Name == c.SelfName
	}
	if !self {
		return nil, fmt.Errorf("the runtime does not list rewired's own pod %s/%s: not trusted (criSocket must be the kubelet's runtime)",
			c.SelfNamespace, c.SelfName)
	}
	return live, nil
}

// note remembers when a record without a creation time was first seen
// (its age counts from then) and forgets the records gone.
func (c *Collector) note(records []*store.Sandbox, now time.Time) {
	if c.firstSeen == nil {
		c.firstSeen, c.reported = map[string]time.Time{}, map[string]bool{}
	}
	present := make(map[string]bool, len(records))
	for _, sb := range records {
		present[sb.ContainerID] = true
		if _, ok := c.firstSeen[sb.ContainerID]; !ok && sb.Created.IsZero() {
			c.firstSeen[sb.ContainerID] = now
		}
	}
	for id := range c.firstSeen {
		if !present[id] {
			delete(c.firstSeen, id)
		}
	}
	for id := range c.reported {
		if !present[id] {
			delete(c.reported, id)
		}
	}
}

// stale says whether a record belongs to a sandbox the runtime no longer
// has and is old enough to release.
func (c *Collector) stale(sb *store.Sandbox, live map[string]bool, now time.Time) bool {
	switch {
	case live[sb.ContainerID]:
		return false
	case sb.PodName == "":
		return false // not a Kubernetes pod's: the runtime's list does not cover it
	case !sb.Complete:
		return false // an ADD running (one a crash cut short is rolled back at restart)
	}
	born := sb.Created
	if born.IsZero() {
		born = c.firstSeen[sb.ContainerID]
	}
	if age := now.Sub(born); age < c.Grace {
		c.Log.Debug("self-GC: sandbox not in the runtime, within the grace period", "pod", pod(sb),
			"containerID", sb.ContainerID, "age", age.Round(time.Second).String(), "grace", c.Grace.String())
		return false
	}
	return true
}

// collect releases one stale record, or reports it in a dry run.
func (c *Collector) collect(ctx context.Context, sb *store.Sandbox, res *Result) {
	res.Stale = append(res.Stale, sb.ContainerID)
	log := c.Log.With("pod", pod(sb), "podUID", sb.PodUID, "containerID", sb.ContainerID, "attachments", interfaces(sb))
	if c.DryRun {
		if !c.reported[sb.ContainerID] {
			c.reported[sb.ContainerID] = true
			metrics.SelfGCSandboxes.Inc("dry_run")
			log.Info("self-GC (dry run): would release the attachments of a sandbox the runtime no longer has")
		}
		return
	}
	released, err := c.Release(ctx, sb)
	switch {
	case err != nil:
		res.Failed = append(res.Failed, sb.ContainerID)
		metrics.SelfGCSandboxes.Inc("failed")
		metrics.Failures.Inc(kube.ReasonStaleReleaseFailed)
		log.Warn("self-GC: releasing a sandbox the runtime no longer has failed (retried at the next pass)", "err", err)
		c.event(sb, kube.EventWarning, kube.ReasonStaleReleaseFailed, fmt.Sprintf(
			"Releasing the network attachments (%s) of sandbox %s, which the container runtime no longer has, failed: %v",
			interfaces(sb), sb.ContainerID, err))
	case released:
		res.Released = append(res.Released, sb.ContainerID)
		metrics.SelfGCSandboxes.Inc("released")
		log.Info("self-GC: released the attachments of a sandbox the runtime no longer has (its CNI DEL never came)")
		c.event(sb, kube.EventNormal, kube.ReasonStaleReleased, fmt.Sprintf(
			"Released the network attachments (%s) of sandbox %s, which the container runtime no longer has (its CNI DEL never came)",
			interfaces(sb), sb.ContainerID))
	default:
		log.Debug("self-GC: the record went meanwhile (a DEL came)")
	}
}

// event records an Event on the record's pod when the pod still exists.
func (c *Collector) event(sb *store.Sandbox, eventType, reason, msg string) {
	if c.Events == nil || c.PodExists == nil || !c.PodExists(sb.PodNamespace, sb.PodName, sb.PodUID) {
		return
	}
	c.Events.Pod(sb.PodNamespace, sb.PodName, ktypes.UID(sb.PodUID), eventType, reason, msg)
}

func (c *Collector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func pod(sb *store.Sandbox) string { return sb.PodNamespace + "/" + sb.PodName }

// interfaces lists a record's attachments as "eth0 on NET, net1 on NET".
func interfaces(sb *store.Sandbox) string {
	parts := make([]string, 0, len(sb.Attachments))
	for i := range sb.Attachments {
		a := &sb.Attachments[i]
		parts = append(parts, a.Link()+" on "+a.Network)
	}
	return strings.Join(parts, ", ")
}
