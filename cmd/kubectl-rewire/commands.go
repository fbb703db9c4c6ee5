package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/pkg/selection"
)

func statusFlags(fs *pflag.FlagSet) func(*cli, []string) error {
	output := fs.StringP("output", "o", "table", "table, json or yaml")
	nodeView := fs.Bool("node-view", false, "also compare with the node's record and the pod's netns (needs pods/exec into the node's privileged rewired pod: administrators)")
	daemonNS, daemonSel := daemonFlags(fs)
	return func(c *cli, args []string) error {
		ctx, cancel := c.ctx()
		defer cancel()
		pod, err := c.client.Pods(c.namespace).Get(ctx, args[0], metav1.GetOptions{})
		if err != nil {
			return err
		}
		list, err := podStatus(pod)
		if err != nil {
			return err
		}
		switch *output {
		case "json":
			b, _ := json.MarshalIndent(list, "", "  ")
			_, err = fmt.Fprintln(c.out, string(b))
		case "yaml":
			b, _ := yaml.Marshal(list)
			_, err = c.out.Write(b)
		case "table":
			err = c.table(pod, list)
			if err == nil && *nodeView {
				c.printNodeDrift(ctx, pod, list, *daemonNS, *daemonSel)
			}
		default:
			err = fmt.Errorf("unknown output %q (table, json or yaml)", *output)
		}
		return err
	}
}

func podStatus(pod *corev1.Pod) ([]netstatus.Status, error) {
	var list []netstatus.Status
	if v := pod.Annotations[netstatus.Annotation]; v != "" {
		if err := json.Unmarshal([]byte(v), &list); err != nil {
			return nil, fmt.Errorf("pod %s: %s: %w", pod.Name, netstatus.Annotation, err)
		}
	}
	return list, nil
}

// table prints the interfaces and, below, what the annotations ask for
// that network-status does not show (yet).
func (c *cli) table(pod *corev1.Pod, list []netstatus.Status) error {
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INTERFACE\tNETWORK\tIPS\tMAC\tDEFAULT")
	for _, s := range list {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\n", s.Interface, s.Name, strings.Join(s.IPs, ","), s.MAC, s.Default)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, d := range drift(pod, list) {
		fmt.Fprintln(c.out, "! "+d)
	}
	return nil
}

// printNodeDrift prints where network-status, the node's record and the
// pod's interfaces disagree (or why the node could not be asked).
func (c *cli) printNodeDrift(ctx context.Context, pod *corev1.Pod, list []netstatus.Status, namespace, selector string) {
	r, err := c.nodeView(ctx, pod, namespace, selector)
	if err != nil {
		fmt.Fprintf(c.out, "(no node view: %v)\n", err)
		return
	}
	drift := nodeDrift(list, r)
	for _, d := range drift {
		fmt.Fprintln(c.out, "! "+d)
	}
	if len(drift) == 0 {
		fmt.Fprintf(c.out, "node %s: record and interfaces match (sandbox %.12s)\n", pod.Spec.NodeName, r.ContainerID)
	}
}

// drift lists the networks the pod's annotations ask for that its
// network-status does not show.
func drift(pod *corev1.Pod, list []netstatus.Status) []string {
	shown := map[string]int{}
	for _, s := range list {
		if !s.Default {
			shown[s.Name]++
		}
	}
	var out []string
	elems, err := selection.ParseNetworks(pod.Annotations[selection.NetworksAnnotation], pod.Namespace)
	if err != nil {
		return []string{fmt.Sprintf("%s is invalid: %v", selection.NetworksAnnotation, err)}
	}
	for _, e := range elems {
		if shown[e.Key()] > 0 {
			shown[e.Key()]--
			continue
		}
		out = append(out, fmt.Sprintf("%s is requested but not attached (yet)", e.Key()))
	}
	if dn, err := selection.ParseDefaultNetwork(pod.Annotations[selection.DefaultNetworkAnnotation]); err == nil && dn != nil {
		for _, s := range list {
			if s.Default && !isNetwork(s.Name, dn) {
				out = append(out, fmt.Sprintf("primary network %s is requested, the pod is on %s", requested(dn), s.Name))
			}
		}
	}
	return out
}

// isNetwork reports whether the network key is the one the default-network
// element names: a name without a namespace may be in the node's
// multusNamespace or the pod's namespace (the daemon resolves it).
func isNetwork(key string, e *selection.Element) bool {
	if e.Namespace == "" {
		return strings.HasSuffix(key, "/"+e.Name)
	}
	return key == e.Key()
}

// requested is the default-network element as written.
func requested(e *selection.Element) string {
	if e.Namespace == "" {
		return e.Name
	}
	return e.Key()
}

func attachFlags(fs *pflag.FlagSet) func(*cli, []string) error {
	ifName := fs.String("ifname", "", "interface name in the pod (default: the next free netN)")
	ips := fs.StringArray("ip", nil, "requested IP address (CIDR), repeatable")
	mac := fs.String("mac", "", "requested MAC address")
	return func(c *cli, args []string) error {
		e := element(args[1])
		if e.Namespace == "" {
			e.Namespace = c.namespace
		}
		e.Interface, e.IPs, e.MAC = *ifName, *ips, *mac
		if err := e.Validate(); err != nil {
			return err
		}
		return c.editNetworks(args[0], func(pod *corev1.Pod, elems []selection.Element) ([]selection.Element, error) {
			return append(elems, e), nil
		}, kube.ReasonInterfaceAdded, kube.ReasonInterfaceAddFailed, kube.ReasonInterfaceRejected)
	}
}

func detachFlags(*pflag.FlagSet) func(*cli, []string) error {
	return func(c *cli, args []string) error {
		return c.editNetworks(args[0], func(pod *corev1.Pod, elems []selection.Element) ([]selection.Element, error) {
			return without(pod, elems, args[1])
		}, kube.ReasonInterfaceRemoved, kube.ReasonInterfaceRemoveFailed, kube.ReasonInterfaceRejected)
	}
}

// errNotAttached is returned by an edit that changes only the annotation:
// nothing is attached, so the daemon has nothing to report.
var errNotAttached = errors.New("not attached")

// element parses "name" or "namespace/name".
func element(network string) selection.Element {
	if ns, name, ok := strings.Cut(network, "/"); ok {
		return selection.Element{Namespace: ns, Name: name}
	}
	return selection.Element{Name: network}
}

// without removes the element attached as interface target (by its
// interface name, or the network-status entry of that interface), or the
// only element of network target.
func without(pod *corev1.Pod, elems []selection.Element, target string) ([]selection.Element, error) {
	key := ""
	list, _ := podStatus(pod)
	for _, s := range list {
		if s.Interface == target && !s.Default {
			key = s.Name
		}
	}
	if e := element(target); key == "" && e.Namespace != "" {
		key = e.Key()
	} else if key == "" {
		key = pod.Namespace + "/" + target
	}
	idx := -1
	for i, e := range elems {
		if e.Interface == target {
			idx = i
			break
		}
		if e.Key() == key && e.Interface == "" {
			if idx >= 0 {
				return nil, fmt.Errorf("pod %s has %s more than once: name the interface", pod.Name, key)
			}
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("pod %s has no secondary network or interface %q", pod.Name, target)
	}
	out := append(elems[:idx:idx], elems[idx+1:]...)
	for _, s := range list {
		if !s.Default && (s.Interface == target || s.Name == key) {
			return out, nil
		}
	}
	return out, errNotAttached
}

// editNetworks rewrites the pod's networks annotation with edit
// (read-modify-write, retried on conflict), then waits for one of the
// reasons.
func (c *cli) editNetworks(name string, edit func(*corev1.Pod, []selection.Element) ([]selection.Element, error), reasons ...string) error {
	ctx, cancel := c.ctx()
	defer cancel()
	var uid types.UID
	attached := true
	seen, err := c.eventNames(ctx, name)
	if err != nil {
		return err
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := c.client.Pods(c.namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		elems, err := selection.ParseNetworks(pod.Annotations[selection.NetworksAnnotation], pod.Namespace)
		if err != nil {
			return fmt.Errorf("the pod's %s: %w", selection.NetworksAnnotation, err)
		}
		elems, err = edit(pod, elems)
		if attached = !errors.Is(err, errNotAttached); err != nil && attached {
			return err
		}
		setAnnotation(pod, selection.NetworksAnnotation, encode(elems))
		uid = pod.UID
		_, err = c.client.Pods(c.namespace).Update(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	if !attached {
		fmt.Fprintf(c.out, "removed from the pod's %s (it was not attached)\n", selection.NetworksAnnotation)
		return nil
	}
	return c.await(ctx, name, uid, seen, reasons...)
}

// encode writes elements as the JSON form of the annotation ("" for none).
func encode(elems []selection.Element) string {
	if len(elems) == 0 {
		return ""
	}
	b, _ := json.Marshal(elems)
	return string(b)
}

func setAnnotation(pod *corev1.Pod, key, value string) {
	if value == "" {
		delete(pod.Annotations, key)
		return
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[key] = value
}

func switchFlags(fs *pflag.FlagSet) func(*cli, []string) error {
	to := fs.String("to", "", `the new primary network ("cluster": the cluster network)`)
	mode := fs.String("mode", "", "keep-ip (default) or readdress")
	return func(c *cli, args []string) error {
		if *to == "" {
			return fmt.Errorf("--to NETWORK is required")
		}
		ctx, cancel := c.ctx()
		defer cancel()
		pod, err := c.client.Pods(c.namespace).Get(ctx, args[0], metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur := pod.Annotations[selection.DefaultNetworkAnnotation]; cur == *to || cur == "" && *to == "cluster" {
			fmt.Fprintf(c.out, "pod %s already asks for %s as its primary network\n", args[0], *to)
			return nil
		}
		seen, err := c.eventNames(ctx, args[0])
		if err != nil {
			return err
		}
		ann := map[string]interface{}{selection.DefaultNetworkAnnotation: *to}
		if *to == "cluster" {
			ann[selection.DefaultNetworkAnnotation] = nil
		}
		if *mode != "" {
			ann[selection.SwitchModeAnnotation] = *mode
		}
		body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"annotations": ann}})
		pod, err = c.client.Pods(c.namespace).Patch(ctx, args[0], types.MergePatchType, body, metav1.PatchOptions{})
		if err != nil {
			return err
		}
		return c.await(ctx, args[0], pod.UID, seen, kube.ReasonNetworkSwitched, kube.ReasonSwitchDraining,
			kube.ReasonSwitchRejected, kube.ReasonSwitchFailed)
	}
}

// eventNames lists the pod's current Events, so that await only reports
// new ones.
func (c *cli) eventNames(ctx context.Context, pod string) (map[string]bool, error) {
	evs, err := c.client.Events(c.namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, ev := range evs.Items {
		seen[ev.Name] = true
	}
	return seen, nil
}
