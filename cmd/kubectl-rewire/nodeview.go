package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/rewire-cni/rewire/pkg/inspect"
	"github.com/rewire-cni/rewire/pkg/netstatus"
)

// daemonPods lists the rewired pods (on node, when given).
func (c *cli) daemonPods(ctx context.Context, namespace, selector, node string) ([]corev1.Pod, error) {
	o := metav1.ListOptions{LabelSelector: selector}
	if node != "" {
		o.FieldSelector = "spec.nodeName=" + node
	}
	list, err := c.client.Pods(namespace).List(ctx, o)
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// nodeView runs "rewired inspect" in the rewired pod of the pod's node: the
// attachments the node recorded and the interfaces in the pod's netns.
func (c *cli) nodeView(ctx context.Context, pod *corev1.Pod, namespace, selector string) (*inspect.Report, error) {
	daemons, err := c.daemonPods(ctx, namespace, selector, pod.Spec.NodeName)
	if err != nil {
		return nil, err
	}
	if len(daemons) == 0 {
		return nil, fmt.Errorf("no rewired pod (%s in %s) on node %s", selector, namespace, pod.Spec.NodeName)
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	req := c.client.RESTClient().Post().Resource("pods").Namespace(namespace).Name(daemons[0].Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "rewired", Command: []string{"/rewired", "inspect", string(pod.UID)},
			Stdout: true, Stderr: true}, runtime.NewParameterCodec(scheme))
	exec, err := remotecommand.NewSPDYExecutor(c.rest, "POST", req.URL())
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		return nil, fmt.Errorf("rewired inspect in %s: %v %s", daemons[0].Name, err, strings.TrimSpace(stderr.String()))
	}
	var r inspect.Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("rewired inspect: %w", err)
	}
	return &r, nil
}

// nodeDrift compares network-status with the node's record and the pod's
// real interfaces.
func nodeDrift(list []netstatus.Status, r *inspect.Report) []string {
	var out []string
	if r.Switching {
		out = append(out, "a switch of the primary network is in progress (or draining)")
	}
	recorded := map[string]inspect.Attachment{}
	var live []inspect.Attachment
	for _, a := range r.Attachments {
		if a.State != inspect.Retained { // a reservation kept after a switch: no interface
			recorded[a.Interface] = a
			live = append(live, a)
		}
	}
	present := map[string]inspect.Link{}
	for _, l := range r.Links {
		present[l.Name] = l
	}
	shown := map[string]bool{}
	for _, s := range list {
		shown[s.Interface] = true
		if a, ok := recorded[s.Interface]; !ok || a.Network != s.Name {
			out = append(out, fmt.Sprintf("network-status shows %s on %s; the node records %q there", s.Name, s.Interface, a.Network))
		}
	}
	for _, a := range live {
		if !shown[a.Interface] {
			out = append(out, fmt.Sprintf("the node records %s on %s (%s); network-status does not show it", a.Network, a.Interface, a.State))
		}
		if _, ok := present[a.Interface]; !ok && r.LinksError == "" {
			out = append(out, fmt.Sprintf("%s is recorded but missing from the pod", a.Interface))
		}
	}
	for _, l := range r.Links {
		if _, ok := recorded[l.Name]; !ok {
			out = append(out, fmt.Sprintf("%s is in the pod but recorded by no network", l.Name))
		}
	}
	if r.LinksError != "" {
		out = append(out, "the pod's netns could not be read: "+r.LinksError)
	}
	return out
}
