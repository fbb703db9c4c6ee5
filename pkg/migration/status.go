package migration

import (
	"context"
	"reflect"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/retry"
)

// nodeStatus summarises the run.
func (r *run) nodeStatus() NodeStatus {
	ns := NodeStatus{Rollback: r.rollback, Waiting: r.waiting}
	refs := make([]*podState, 0, len(r.pods))
	for _, s := range r.pods {
		refs = append(refs, s)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].ref < refs[j].ref })
	for _, s := range refs {
		ns.Total++
		switch s.phase {
		case switched:
			ns.Switched++
		case failed:
			ns.Failed++
			ns.FailedPods = append(ns.FailedPods, PodResult{Pod: s.ref, Reason: s.reason})
		case skipped:
			ns.Skipped++
			ns.SkippedPods = append(ns.SkippedPods, PodResult{Pod: s.ref, Reason: s.reason})
		case switching:
			ns.Switching++
			ns.Remaining++
		default:
			ns.Remaining++
		}
	}
	return ns
}

// report writes the node's entry into the migration's status when it
// changed (an update of the status subresource, retried on conflict).
func (c *Controller) report(ctx context.Context, m *Migration, r *run) error {
	ns := r.nodeStatus()
	ns.Paused = m.Spec.Paused
	ns.From, ns.To = c.key(m.Spec.From), c.key(m.Spec.To)
	if r.reported != nil && reflect.DeepEqual(*r.reported, ns) {
		return nil
	}
	ns2 := ns
	ns2.Updated = metav1.Now()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := c.client.Get(ctx, m.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur, err := FromUnstructured(u)
		if err != nil {
			return err
		}
		if cur.Status.Nodes == nil {
			cur.Status.Nodes = map[string]NodeStatus{}
		}
		cur.Status.Nodes[c.node.Name] = ns2
		cur.Status.sum(&cur.Spec)
		status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&cur.Status)
		if err != nil {
			return err
		}
		u.Object["status"] = status
		_, err = c.client.UpdateStatus(ctx, u, metav1.UpdateOptions{})
		return err
	})
	if err == nil {
		r.reported = &ns
	}
	return err
}
