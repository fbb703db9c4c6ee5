package migration

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// Node is what the controller needs from its daemon.
type Node struct {
	Name   string
	Labels map[string]string
	// MultusNamespace is where a NAD named without namespace in a
	// migration's from or to is (the daemon's multusNamespace).
	MultusNamespace string
	// Pods lists the node's pods (informer cache).
	Pods func() []*kube.Pod
	// NamespaceLabels returns a namespace's labels (informer cache).
	NamespaceLabels func(namespace string) map[string]string
	// Patch merge-patches a pod's annotations (nil removes a key).
	Patch func(ctx context.Context, namespace, name string, annotations map[string]interface{}) error
	// Primary returns the network key of the pod's recorded primary, false
	// while it has no completed sandbox here or a switch of it is running.
	Primary func(uid types.UID) (string, bool)
	// ClusterKey is the recorded key of the cluster network.
	ClusterKey func() string
	// CanOwn reports whether a network (key) can take over a pod's IP; an
	// error when the network cannot be loaded (no such NAD, say).
	CanOwn func(network string) (bool, error)
	// Rejected returns the reason the switch reconciler refused or failed
	// the pod's default-network annotation value value.
	Rejected func(namespace, name, value string) (string, bool)
	Log      *slog.Logger
}

// SwitchTimeout bounds how long a pod may wait for its switch to start
// before it is reported failed; a switch in progress is waited for (its
// delegates are bounded by their own timeout), so the pod is never pointed
// back while B's ADD could still commit.
const SwitchTimeout = 2 * time.Minute

// Pod phases within a run.
const (
	pending = iota
	switching
	switched
	failed
	skipped
)

type podState struct {
	ref    string
	phase  int
	reason string
	since  time.Time
	held   bool // skipped: another migration owns it
}

// run is the node's bookkeeping of one migration pass (forward or rollback).
type run struct {
	name     string // the migration's
	rollback bool
	pods     map[types.UID]*podState
	reported *NodeStatus
	// waiting: why the last step started no switch (see NodeStatus).
	waiting string
	// failed are the pods this node reported failed in this pass before
	// it restarted (by "namespace/name", with the reason): not retried.
	failed map[string]string
	// source and target are the recorded keys of the pass's networks,
	// found once per step (finding them reads the cluster network's
	// config).
	source, target string
}

// Controller executes the migrations for one node.
type Controller struct {
	node     Node
	client   dynamic.NamespaceableResourceInterface
	informer cache.SharedIndexInformer

	mu   sync.Mutex
	runs map[types.UID]*run
}

// New returns a controller watching NetworkMigrations.
func New(client dynamic.Interface, node Node) *Controller {
	res := client.Resource(GVR)
	return &Controller{
		node: node, client: res, runs: map[types.UID]*run{},
		informer: cache.NewSharedIndexInformer(kube.ListWatch(res.List, res.Watch), &unstructured.Unstructured{}, 0, cache.Indexers{}),
	}
}

// Run works on the migrations every interval until ctx ends.
func (c *Controller) Run(ctx context.Context, interval time.Duration) {
	go c.informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		c.Step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// migrations returns the cached migrations.
func (c *Controller) migrations() []*Migration {
	var out []*Migration
	for _, obj := range c.informer.GetStore().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		m, err := FromUnstructured(u)
		if err != nil {
			c.node.Log.Warn("ignoring NetworkMigration", "err", err)
			continue
		}
		out = append(out, m)
	}
	return out
}

// Step advances every migration once.
func (c *Controller) Step(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	live := map[types.UID]bool{}
	for _, m := range c.migrations() {
		live[m.UID] = true
		if !c.nodeSelected(m) {
			continue
		}
		r := c.runs[m.UID]
		if r == nil || r.rollback != m.Spec.Rollback {
			r = &run{name: m.Name, rollback: m.Spec.Rollback, pods: map[types.UID]*podState{}, failed: c.reportedFailures(m)}
			c.runs[m.UID] = r
		}
		c.stepRun(ctx, m, r)
		if err := c.report(ctx, m, r); err != nil {
			c.node.Log.Warn("NetworkMigration status", "migration", m.Name, "err", err)
		}
	}
	for uid := range c.runs {
		if !live[uid] {
			delete(c.runs, uid)
		}
	}
}

func (c *Controller) nodeSelected(m *Migration) bool {
	return matches(m.Spec.NodeSelector, c.node.Labels)
}

func matches(sel *metav1.LabelSelector, set map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(set))
}

// selected reports whether the migration's selectors pick the pod.
func (c *Controller) selected(m *Migration, p *kube.Pod) bool {
	if len(m.Spec.Namespaces) > 0 && !contains(m.Spec.Namespaces, p.Namespace) {
		return false
	}
	if m.Spec.NamespaceSelector != nil && (c.node.NamespaceLabels == nil || !matches(m.Spec.NamespaceSelector, c.node.NamespaceLabels(p.Namespace))) {
		return false
	}
	return matches(m.Spec.PodSelector, p.Labels)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (c *Controller) stepRun(ctx context.Context, m *Migration, r *run) {
	r.waiting = ""
	r.source, r.target = c.key(m.Spec.source()), c.key(m.Spec.target())
	pods := c.node.Pods()
	sort.Slice(pods, func(i, j int) bool { return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name })
	present := map[types.UID]bool{}
	for _, p := range pods {
		if p.Terminating || !c.selected(m, p) {
			continue // a pod being deleted is not switched, nor waited for
		}
		s := r.pods[p.UID]
		if owner := c.heldBy(m, p); owner != "" {
			if s != nil || c.candidate(m, r, p) {
				// Its owner marked it first: switched (or rolled back) by
				// that migration alone.
				r.pods[p.UID] = &podState{ref: p.Namespace + "/" + p.Name, phase: skipped, held: true,
					reason: fmt.Sprintf("held by NetworkMigration %s, which selected it first", owner)}
				present[p.UID] = true
			}
			continue
		}
		if s != nil && s.held {
			s = nil // its owner let it go
		}
		if s == nil {
			if !c.candidate(m, r, p) {
				continue
			}
			s = &podState{ref: p.Namespace + "/" + p.Name}
			if reason, ok := r.failed[s.ref]; ok {
				s.phase, s.reason = failed, reason
			}
			r.pods[p.UID] = s
		}
		present[p.UID] = true
		c.advance(ctx, m, r, p, s)
	}
	for uid := range r.pods {
		if !present[uid] {
			delete(r.pods, uid) // the pod is gone
		}
	}
}

// heldBy names the other migration that marked the pod, while that one
// exists ("" for none).
func (c *Controller) heldBy(m *Migration, p *kube.Pod) string {
	for uid, r := range c.runs { // started here, its mark not in the cache yet
		if s := r.pods[p.UID]; uid != m.UID && s != nil && (s.phase == switching || s.phase == switched && !r.rollback) {
			return r.name
		}
	}
	owner := p.Annotations[Annotation]
	if owner == "" || owner == m.Name || c.informer == nil {
		return ""
	}
	if _, exists, err := c.informer.GetStore().GetByKey(owner); err != nil || !exists {
		return ""
	}
	return owner
}

// reportedFailures are the failed pods of this node's report of the
// migration's current pass (a restart keeps them failed).
func (c *Controller) reportedFailures(m *Migration) map[string]string {
	ns, ok := m.Status.Nodes[c.node.Name]
	if !ok || ns.Rollback != m.Spec.Rollback {
		return nil
	}
	out := map[string]string{}
	for _, f := range ns.FailedPods {
		out[f.Pod] = f.Reason
	}
	return out
}

// candidate reports whether the pod takes part in this pass: forward, a pod
// on the source network, one this migration already marked, or (newPods: to)
// a pod started on the target for it; rollback, a pod this migration marked.
func (c *Controller) candidate(m *Migration, r *run, p *kube.Pod) bool {
	if p.Annotations[Annotation] == m.Name {
		return true
	}
	if m.Spec.Rollback {
		return false
	}
	prim, ok := c.node.Primary(p.UID)
	if ok && m.Spec.NewPods == "to" && p.Annotations[selection.DefaultNetworkAnnotation] == "" &&
		prim == r.target {
		return true
	}
	return ok && prim == r.source
}

// key is the recorded key of a network named in a migration.
func (c *Controller) key(network string) string {
	return key(network, c.node.MultusNamespace, c.node.ClusterKey())
}

// annotation is the default-network annotation value selecting a network
// named in a migration (nil: the cluster network).
func (c *Controller) annotation(network string) interface{} {
	return annotationValue(network, c.node.MultusNamespace)
}

// NewPodNetwork returns the default-network annotation value a pod created
// on this node starts with while a migration with newPods: to selects it.
func (c *Controller) NewPodNetwork(p *kube.Pod) (string, bool) {
	for _, m := range c.migrations() {
		if m.Spec.NewPods == "to" && !m.Spec.Rollback && m.Spec.To != Cluster && c.nodeSelected(m) && c.selected(m, p) {
			return qualified(m.Spec.To, c.node.MultusNamespace), true
		}
	}
	return "", false
}

func (c *Controller) advance(ctx context.Context, m *Migration, r *run, p *kube.Pod, s *podState) {
	target := r.target
	prim, ok := c.node.Primary(p.UID)
	switch s.phase {
	case pending:
		if ok && prim == target {
			c.done(ctx, m, p, s)
			return
		}
		if !ok || m.Spec.Paused || r.inFlight() >= max(1, m.Spec.MaxConcurrentPerNode) {
			return
		}
		c.start(ctx, m, r, p, s, target)
	case skipped:
		// Retried as soon as the target can take the pod's IP over (a
		// capability added to its config, say).
		if canOwn, err := c.node.CanOwn(target); err == nil && canOwn {
			s.phase, s.reason = pending, ""
		}
	case switching:
		value, _ := c.annotation(m.Spec.target()).(string)
		switch reason, rejected := c.node.Rejected(p.Namespace, p.Name, value); {
		case ok && prim == target:
			c.done(ctx, m, p, s)
		case rejected:
			c.fail(ctx, m, p, s, reason)
		case ok && time.Since(s.since) > SwitchTimeout: // a switch in progress is waited for
			c.fail(ctx, m, p, s, fmt.Sprintf("not switched within %s", SwitchTimeout))
		}
	}
}

// start sets the pod's annotations so that the switch reconciler moves it.
func (c *Controller) start(ctx context.Context, m *Migration, r *run, p *kube.Pod, s *podState, target string) {
	ann := map[string]interface{}{selection.DefaultNetworkAnnotation: c.annotation(m.Spec.target())}
	if !m.Spec.Rollback {
		ann[Annotation] = m.Name
	}
	canOwn, err := c.node.CanOwn(target)
	if err != nil {
		// Nothing is patched: the pod stays where it is, and pending
		// until the network can be loaded (a NAD created later).
		r.waiting = fmt.Sprintf("network %s: %v", target, err)
		if !strings.Contains(m.Spec.target(), "/") && m.Spec.target() != Cluster {
			r.waiting += fmt.Sprintf(" (a name without namespace in a NetworkMigration is a NAD of multusNamespace %s)", c.node.MultusNamespace)
		}
		return
	}
	if !canOwn {
		if !m.Spec.AllowReaddress {
			s.phase, s.reason = skipped, fmt.Sprintf("%s cannot take over the pod's IP (no \"ips\" capability) and allowReaddress is off", target)
			return
		}
		ann[selection.SwitchModeAnnotation] = "readdress"
		if m.Spec.DrainTimeout != "" {
			ann[selection.DrainTimeoutAnnotation] = m.Spec.DrainTimeout
		}
	}
	if err := c.node.Patch(ctx, p.Namespace, p.Name, ann); err != nil {
		s.reason = err.Error() // retried at the next step
		return
	}
	s.phase, s.since, s.reason = switching, time.Now(), ""
}

// done marks a pod switched. Forward, the pod's annotations name the target
// and the migration (a pod found on the target already, such as one started
// there, gets them); a rollback removes the migration's marks.
func (c *Controller) done(ctx context.Context, m *Migration, p *kube.Pod, s *podState) {
	if !m.Spec.Rollback && p.Annotations[Annotation] != m.Name {
		if err := c.node.Patch(ctx, p.Namespace, p.Name, map[string]interface{}{
			selection.DefaultNetworkAnnotation: c.annotation(m.Spec.target()), Annotation: m.Name}); err != nil {
			return // retried at the next step
		}
	}
	if m.Spec.Rollback {
		if err := c.node.Patch(ctx, p.Namespace, p.Name, map[string]interface{}{
			Annotation: nil, selection.SwitchModeAnnotation: nil, selection.DrainTimeoutAnnotation: nil}); err != nil {
			return // retried at the next step
		}
	}
	s.phase = switched
}

// fail reports a pod that could not be switched and points its annotation
// back at the network it is on, so nothing retries it.
func (c *Controller) fail(ctx context.Context, m *Migration, p *kube.Pod, s *podState, reason string) {
	ann := map[string]interface{}{selection.DefaultNetworkAnnotation: c.annotation(m.Spec.source())}
	if !m.Spec.Rollback {
		ann[Annotation] = nil
	}
	if err := c.node.Patch(ctx, p.Namespace, p.Name, ann); err != nil {
		return // retried at the next step
	}
	s.phase, s.reason = failed, reason
	c.node.Log.Warn("migration could not switch a pod", "migration", m.Name, "pod", s.ref, "reason", reason)
}

func (r *run) inFlight() int {
	n := 0
	for _, s := range r.pods {
		if s.phase == switching {
			n++
		}
	}
	return n
}
