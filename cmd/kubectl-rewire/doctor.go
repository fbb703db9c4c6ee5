package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/rewire-cni/rewire/pkg/doctor"
)

// staleAfter is when a self-check report is too old to trust.
const staleAfter = 5 * time.Minute

func doctorFlags(fs *pflag.FlagSet) func(*cli, []string) error {
	namespace, selector := daemonFlags(fs)
	return func(c *cli, args []string) error {
		ctx, cancel := c.ctx()
		defer cancel()
		pods, err := c.daemonPods(ctx, *namespace, *selector, first(args))
		if err != nil {
			return err
		}
		if len(pods) == 0 {
			return fmt.Errorf("no rewired pod (%s in %s) found%s", *selector, *namespace, map[bool]string{true: " on node " + first(args)}[len(args) == 1])
		}
		sort.Slice(pods, func(i, j int) bool { return pods[i].Spec.NodeName < pods[j].Spec.NodeName })
		healthy := true
		versions := map[string][]string{}
		for _, p := range pods {
			ok, version := c.doctorPod(&p)
			healthy = healthy && ok
			versions[version] = append(versions[version], p.Spec.NodeName)
		}
		if len(versions) > 1 {
			healthy = false
			fmt.Fprintf(c.out, "FAIL  version skew between nodes: %v\n", versions)
		}
		if !healthy {
			return errFailed
		}
		return nil
	}
}

// doctorPod prints one node's report; it returns whether all is well and
// the daemon's version.
func (c *cli) doctorPod(p *corev1.Pod) (bool, string) {
	ready := "unknown"
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			ready = string(cond.Status)
		}
	}
	ok := ready != string(corev1.ConditionFalse)
	var r doctor.Report
	raw := p.Annotations[doctor.Annotation]
	err := json.Unmarshal([]byte(raw), &r)
	age := "never"
	if err == nil {
		if at, perr := time.Parse(time.RFC3339, r.Time); perr == nil {
			age = time.Since(at).Round(time.Second).String() + " ago"
			ok = ok && time.Since(at) < staleAfter
		}
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tPOD\tREADY\tVERSION\tREPORTED")
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Spec.NodeName, p.Name, ready, r.Version, age)
	_ = w.Flush()
	if raw == "" || err != nil {
		fmt.Fprintf(c.out, "  FAIL  no self-check published on the pod (%s)\n", doctor.Annotation)
		return false, r.Version
	}
	for _, ch := range r.Checks {
		mark := "ok  "
		if !ch.OK {
			mark, ok = "FAIL", false
		}
		fmt.Fprintf(c.out, "  %s  %-17s %s\n", mark, ch.Name, ch.Detail)
	}
	return ok, r.Version
}

// daemonFlags are the flags that find the rewired pods.
func daemonFlags(fs *pflag.FlagSet) (namespace, selector *string) {
	return fs.String("daemon-namespace", "kube-system", "namespace of the rewired DaemonSet"),
		fs.String("daemon-selector", "app=rewire", "label selector of the rewired pods")
}

func first(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}
