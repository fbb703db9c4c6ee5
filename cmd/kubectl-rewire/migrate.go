package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/rewire-cni/rewire/pkg/migration"
)

func migrateCreateFlags(fs *pflag.FlagSet) func(*cli, []string) error {
	var spec migration.Spec
	fs.StringVar(&spec.From, "from", "", `the network the pods are on: "cluster" or a NAD [namespace/]name`)
	fs.StringVar(&spec.To, "to", "", `the network to move them to: "cluster" or a NAD [namespace/]name`)
	selector := fs.StringP("selector", "l", "", "label selector of the pods (canary), e.g. app=web")
	nodeSelector := fs.String("node-selector", "", "label selector of the nodes")
	nsSelector := fs.String("namespace-selector", "", "label selector of the namespaces")
	fs.StringSliceVar(&spec.Namespaces, "namespaces", nil, "only pods of these namespaces (default: all)")
	fs.IntVar(&spec.MaxConcurrentPerNode, "max-per-node", 1, "switches at once per node")
	fs.BoolVar(&spec.AllowReaddress, "allow-readdress", false, "pods whose IP the target cannot take over get a new IP instead of being skipped")
	fs.StringVar(&spec.DrainTimeout, "drain-timeout", "", "longest drain of a re-addressing switch (default: the daemon's)")
	fs.StringVar(&spec.NewPods, "new-pods", "", "where pods created during the migration start: from (default) or to")
	fs.BoolVar(&spec.Paused, "paused", false, "create it paused")
	return func(c *cli, args []string) error {
		if spec.From == "" || spec.To == "" {
			return fmt.Errorf("--from and --to are required")
		}
		var err error
		if spec.PodSelector, err = parseSelector(*selector); err != nil {
			return err
		}
		if spec.NodeSelector, err = parseSelector(*nodeSelector); err != nil {
			return err
		}
		if spec.NamespaceSelector, err = parseSelector(*nsSelector); err != nil {
			return err
		}
		m := migration.Migration{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rewire.io/v1alpha1", Kind: "NetworkMigration"},
			ObjectMeta: metav1.ObjectMeta{Name: args[0]}, Spec: spec,
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&m)
		if err != nil {
			return err
		}
		delete(obj, "status")
		ctx, cancel := c.ctx()
		defer cancel()
		if err := c.migrationConflict(ctx, spec); err != nil {
			return err
		}
		if _, err := c.dyn.Resource(migration.GVR).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "networkmigration %s created: %s -> %s (follow it: kubectl rewire migrate status %s -w)\n", args[0], spec.From, spec.To, args[0])
		return nil
	}
}

// migrationConflict refuses a spec that would fight an existing migration
// (migration.Conflict).
func (c *cli) migrationConflict(ctx context.Context, spec migration.Spec) error {
	list, err := c.dyn.Resource(migration.GVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing NetworkMigrations: %w", err)
	}
	var existing []*migration.Migration
	for i := range list.Items {
		m, err := migration.FromUnstructured(&list.Items[i])
		if err != nil {
			return err
		}
		existing = append(existing, m)
	}
	return migration.Conflict(spec, existing)
}

func parseSelector(s string) (*metav1.LabelSelector, error) {
	if s == "" {
		return nil, nil
	}
	sel, err := metav1.ParseToLabelSelector(s)
	if err != nil {
		return nil, fmt.Errorf("selector %q: %w", s, err)
	}
	return sel, nil
}

// migrateSet returns a command that merge-patches the migration's spec.
func migrateSet(spec map[string]interface{}, done string) func(*pflag.FlagSet) func(*cli, []string) error {
	return func(*pflag.FlagSet) func(*cli, []string) error {
		return func(c *cli, args []string) error {
			body, _ := json.Marshal(map[string]interface{}{"spec": spec})
			ctx, cancel := c.ctx()
			defer cancel()
			if _, err := c.dyn.Resource(migration.GVR).Patch(ctx, args[0], types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "networkmigration %s %s\n", args[0], done)
			return nil
		}
	}
}

func migrateStatusFlags(fs *pflag.FlagSet) func(*cli, []string) error {
	watch := fs.BoolP("watch", "w", false, "follow the progress until the migration is complete, rolled back, or has nothing left to try (Incomplete)")
	output := fs.StringP("output", "o", "table", "table, json or yaml")
	return func(c *cli, args []string) error {
		var last string
		for {
			ctx, cancel := c.ctx()
			u, err := c.dyn.Resource(migration.GVR).Get(ctx, args[0], metav1.GetOptions{})
			cancel()
			if err != nil {
				return err
			}
			m, err := migration.FromUnstructured(u)
			if err != nil {
				return err
			}
			if !*watch {
				return c.printMigration(m, *output)
			}
			if line := progress(m); line != last {
				fmt.Fprintln(c.out, line)
				last = line
			}
			if done := map[bool]string{false: "Complete", true: "RolledBack"}[m.Spec.Rollback]; m.Status.Phase == done || m.Status.Phase == "Incomplete" {
				return c.printMigration(m, "table")
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// progress is one line: a bar, the counts and the phase.
func progress(m *migration.Migration) string {
	s := m.Status
	done := s.Switched + s.Failed + s.Skipped
	const width = 30
	filled := 0
	if s.Total > 0 {
		filled = width * done / s.Total
	}
	return fmt.Sprintf("[%s%s] %d/%d done: %d switched, %d failed, %d skipped, %d remaining (%s)",
		strings.Repeat("#", filled), strings.Repeat("-", width-filled), done, s.Total, s.Switched, s.Failed, s.Skipped, s.Remaining, s.Phase)
}

func (c *cli) printMigration(m *migration.Migration, output string) error {
	switch output {
	case "json":
		b, _ := json.MarshalIndent(m, "", "  ")
		_, err := fmt.Fprintln(c.out, string(b))
		return err
	case "yaml":
		b, _ := yaml.Marshal(m)
		_, err := c.out.Write(b)
		return err
	case "table":
	default:
		return fmt.Errorf("unknown output %q (table, json or yaml)", output)
	}
	fmt.Fprintf(c.out, "%s: %s -> %s%s\n%s\n", m.Name, m.Spec.From, m.Spec.To, map[bool]string{true: " (rollback)"}[m.Spec.Rollback], progress(m))
	nodes := make([]string, 0, len(m.Status.Nodes))
	for n := range m.Status.Nodes {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tTOTAL\tSWITCHED\tFAILED\tSKIPPED\tREMAINING\tUPDATED")
	for _, n := range nodes {
		s := m.Status.Nodes[n]
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", n, s.Total, s.Switched, s.Failed, s.Skipped, s.Remaining, s.Updated.Format(time.RFC3339))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, n := range nodes {
		for _, p := range m.Status.Nodes[n].FailedPods {
			fmt.Fprintf(c.out, "failed  %s (%s): %s\n", p.Pod, n, p.Reason)
		}
		for _, p := range m.Status.Nodes[n].SkippedPods {
			fmt.Fprintf(c.out, "skipped %s (%s): %s\n", p.Pod, n, p.Reason)
		}
	}
	return nil
}
