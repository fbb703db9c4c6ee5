package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/executor"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/planner"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/pkg/store"
)

// drainPoll is how often a draining switch checks its connections.
const drainPoll = time.Second

// switchPrimary moves a running pod to the primary network its
// default-network annotation asks for (the cluster network when it has
// none), keeping its IP addresses. A refused or undone switch is reported
// once per annotation value and not retried; a switch that failed after the
// cut-over is finished by a retry. The caller holds the sandbox lock.
func (r *Reconciler) switchPrimary(ctx context.Context, ref podRef, pod *kube.Pod, sb *store.Sandbox) error {
	if sb.Switch != nil {
		err := r.d.Exec.ResumeSwitch(ctx, sb)
		if r.draining(ref, err) {
			return nil
		}
		r.publish(ref, sb)
		if err == nil {
			r.d.event(ref, kube.EventNormal, kube.ReasonNetworkSwitched, fmt.Sprintf("Switched %s to %s", sb.IfName, sb.Primary().Network))
		}
		return err
	}
	cur := sb.Primary()
	if cur == nil {
		return nil
	}
	want, err := r.d.planPrimary(pod, sb.IfName, cur.CapabilityArgs, cur.Network)
	var planErr *planner.Error
	switch {
	case errors.As(err, &planErr):
		r.reject(ref, pod, selection.DefaultNetworkAnnotation, kube.ReasonSwitchRejected, err)
		return nil
	case err != nil:
		return err
	case want.Network == cur.Network:
		r.forgetRejection(ref, selection.DefaultNetworkAnnotation)
		return nil
	case r.d.startedByMigration(pod, cur.Network):
		return nil // its migration writes the annotation
	case r.isRejected(ref, pod):
		return nil
	}
	opts := executor.SwitchOptions{DrainTimeout: r.d.Config.SwitchDrainTimeout.Duration}
	switch mode := pod.Annotations[selection.SwitchModeAnnotation]; mode {
	case "", "keep-ip":
	case "readdress":
		opts.Readdress = true
		if d, err := time.ParseDuration(pod.Annotations[selection.DrainTimeoutAnnotation]); err == nil && d > 0 {
			opts.DrainTimeout = d
		}
	default:
		r.reject(ref, pod, selection.DefaultNetworkAnnotation, kube.ReasonSwitchRejected,
			fmt.Errorf("%s: unknown mode %q (want keep-ip or readdress)", selection.SwitchModeAnnotation, mode))
		return nil
	}
	from, start := cur.Network, time.Now()
	var cutOver time.Duration
	opts.CutOver = func() { cutOver = time.Since(start) }
	ctx, plugins := executor.WithBusy(ctx)
	_, err = r.d.Exec.Switch(ctx, sb, want, opts)
	metrics.Reconciles.Inc("switch", switchResult(err))
	var refused *executor.SwitchRefused
	var aborted *executor.SwitchAborted
	switch {
	case errors.As(err, &refused):
		r.reject(ref, pod, selection.DefaultNetworkAnnotation, kube.ReasonSwitchRejected, err)
		return nil
	case errors.As(err, &aborted):
		r.reject(ref, pod, selection.DefaultNetworkAnnotation, kube.ReasonSwitchFailed, err)
		return nil
	case r.draining(ref, err):
		r.publish(ref, sb) // both attachments, the new one as default
		r.d.event(ref, kube.EventNormal, kube.ReasonSwitchDraining, "New connections use "+want.Network+"; "+err.Error())
		return nil
	case err != nil:
		r.d.event(ref, kube.EventWarning, kube.ReasonSwitchFailed, err.Error())
		if p := sb.Primary(); p != nil && p.Network == want.Network {
			r.publish(ref, sb) // committed: the pod already works on the new network
		}
		return err
	}
	took := time.Since(start)
	metrics.SwitchSeconds.Observe(took.Seconds())
	metrics.SwitchCutOverSeconds.Observe(cutOver.Seconds())
	r.d.Log.Info("switched primary network", "pod", ref, "from", from, "to", want.Network, "cutOverMs", ms(cutOver), "ms", ms(took),
		"pluginsMs", ms(plugins.Total()))
	kept := fmt.Sprintf("keeping %v", executor.Addresses(sb.Primary()))
	if opts.Readdress {
		kept = "with new addresses (nothing to drain)"
	}
	r.d.event(ref, kube.EventNormal, kube.ReasonNetworkSwitched, fmt.Sprintf("Switched %s from %s to %s %s: traffic moved in %.1f ms, done in %.1f ms (plugins ran %.1f ms)",
		sb.IfName, from, want.Network, kept, ms(cutOver), ms(took), ms(plugins.Total())))
	r.publish(ref, sb)
	return nil
}

// isRejected reports whether the pod's default-network value was refused
// or failed already (it is not retried).
func (r *Reconciler) isRejected(ref podRef, pod *kube.Pod) bool {
	_, ok := r.Rejected(ref.Namespace, ref.Name, pod.Annotations[selection.DefaultNetworkAnnotation])
	return ok
}

// switchResult is the metrics label of a switch's outcome.
func switchResult(err error) string {
	var refused *executor.SwitchRefused
	var aborted *executor.SwitchAborted
	var draining *executor.Draining
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &refused):
		return "refused"
	case errors.As(err, &aborted):
		return "aborted"
	case errors.As(err, &draining):
		return "draining"
	}
	return "error"
}

// draining reports whether err says a re-addressing switch is draining;
// then the pod is checked again after drainPoll.
func (r *Reconciler) draining(ref podRef, err error) bool {
	var d *executor.Draining
	if !errors.As(err, &d) {
		return false
	}
	r.queue.AddAfter(ref.String(), drainPoll)
	return true
}

// startedByMigration reports whether a pod without a default-network
// annotation is on network because a migration started it there (newPods:
// to); the migration controller then writes the annotation.
func (d *Daemon) startedByMigration(pod *kube.Pod, network string) bool {
	if d.NewPodNetwork == nil || pod.Annotations[selection.DefaultNetworkAnnotation] != "" {
		return false
	}
	v, ok := d.NewPodNetwork(pod)
	if !ok {
		return false
	}
	if !strings.Contains(v, "/") {
		v = pod.Namespace + "/" + v
	}
	return v == network
}

// planPrimary plans the primary attachment of a running pod, now on network
// current.
func (d *Daemon) planPrimary(pod *kube.Pod, ifName string, runtimeArgs map[string]interface{}, current string) (attachment.Spec, error) {
	cluster, err := d.ClusterNetwork()
	if err != nil {
		return attachment.Spec{}, err
	}
	return planner.Primary(planner.Input{
		Pod:    planner.Pod{Namespace: pod.Namespace, Name: pod.Name, Annotations: pod.Annotations},
		Config: d.Config, ClusterNetwork: cluster, IfName: ifName, RuntimeArgs: runtimeArgs, CurrentPrimary: current, Lookup: d.Networks,
	})
}
