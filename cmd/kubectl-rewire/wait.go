package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// await polls the pod's Events until a new one with one of the reasons
// arrives and prints it; a Warning is a failure.
func (c *cli) await(ctx context.Context, pod string, uid types.UID, seen map[string]bool, reasons ...string) error {
	fmt.Fprintf(c.out, "waiting for the node daemon (%s)...\n", pod)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		evs, err := c.client.Events(c.namespace).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + pod + ",involvedObject.uid=" + string(uid)})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if seen[ev.Name] || !slices.Contains(reasons, ev.Reason) {
				continue
			}
			fmt.Fprintf(c.out, "%s: %s\n", ev.Reason, ev.Message)
			if ev.Type == corev1.EventTypeWarning {
				return errFailed
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no outcome from the node daemon within %s (is rewired running on the pod's node?)", c.timeout)
		case <-tick.C:
		}
	}
}
