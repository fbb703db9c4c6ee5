package migration

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rewire-cni/rewire/pkg/kube"
)

// A network named without namespace is a NAD of multusNamespace for every
// pod, whatever the pod's namespace.
func TestKey(t *testing.T) {
	for _, tc := range []struct{ network, want string }{
		{"cluster", "cluster-1"},
		{"ptp", "kube-system/ptp"},
		{"shop/ptp", "shop/ptp"},
	} {
		if got := key(tc.network, "kube-system", "cluster-1"); got != tc.want {
			t.Errorf("key(%q) = %q, want %q", tc.network, got, tc.want)
		}
	}
	if annotationValue(Cluster, "kube-system") != nil {
		t.Error("annotationValue: cluster removes the annotation")
	}
	for network, want := range map[string]string{"ptp": "kube-system/ptp", "shop/ptp": "shop/ptp"} {
		if got := annotationValue(network, "kube-system"); got != want {
			t.Errorf("annotationValue(%q) = %v, want %q (always with its namespace)", network, got, want)
		}
	}
}

func TestSelected(t *testing.T) {
	pod := &kube.Pod{Namespace: "shop", Labels: map[string]string{"app": "web"}}
	for _, tc := range []struct {
		name string
		spec Spec
		want bool
	}{
		{"everything", Spec{}, true},
		{"label matches", Spec{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}, true},
		{"label differs", Spec{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}, false},
		{"namespace listed", Spec{Namespaces: []string{"shop"}}, true},
		{"namespace not listed", Spec{Namespaces: []string{"other"}}, false},
		{"namespace labels match", Spec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"canary": "yes"}}}, true},
		{"namespace labels differ", Spec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"canary": "no"}}}, false},
	} {
		c := &Controller{node: Node{NamespaceLabels: func(ns string) map[string]string {
			return map[string]string{"canary": map[bool]string{true: "yes"}[ns == "shop"]}
		}}}
		if got := c.selected(&Migration{Spec: tc.spec}, pod); got != tc.want {
			t.Errorf("%s: selected = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestStatusSum(t *testing.T) {
	nodes := map[string]NodeStatus{
		"a": {Counts: Counts{Total: 5, Switched: 5}},
		"b": {Counts: Counts{Total: 3, Switched: 1, Skipped: 1, Remaining: 1}},
	}
	for _, tc := range []struct {
		name  string
		spec  Spec
		nodes map[string]NodeStatus
		phase string
	}{
		{"running", Spec{}, nodes, "Running"},
		{"paused", Spec{Paused: true}, nodes, "Paused"},
		{"rolling back", Spec{Rollback: true}, nodes, "RollingBack"},
		{"complete", Spec{}, map[string]NodeStatus{"a": nodes["a"]}, "Complete"},
		{"rolled back", Spec{Rollback: true}, map[string]NodeStatus{"a": nodes["a"]}, "RolledBack"},
		{"a pod failed", Spec{}, map[string]NodeStatus{"a": nodes["a"], "c": {Counts: Counts{Total: 5, Switched: 4, Failed: 1}}}, "Incomplete"},
		{"a pod could not go back", Spec{Rollback: true}, map[string]NodeStatus{"c": {Counts: Counts{Total: 2, Switched: 1, Skipped: 1}}}, "Incomplete"},
	} {
		st := Status{Nodes: tc.nodes}
		st.sum(&tc.spec)
		if st.Phase != tc.phase {
			t.Errorf("%s: phase %q, want %q", tc.name, st.Phase, tc.phase)
		}
	}
	st := Status{Nodes: nodes}
	st.sum(&Spec{})
	if want := (Counts{Total: 8, Switched: 6, Skipped: 1, Remaining: 1}); st.Counts != want {
		t.Errorf("sum %+v, want %+v", st.Counts, want)
	}
}

func TestConflict(t *testing.T) {
	existing := []*Migration{{ObjectMeta: metav1.ObjectMeta{Name: "to-b"}, Spec: Spec{From: Cluster, To: "kube-system/b"}}}
	for _, tc := range []struct {
		from, to string
		refused  bool
	}{
		{Cluster, "kube-system/c", false}, // another target for other pods: ownership decides
		{"kube-system/b", "kube-system/c", true},
		{"b", Cluster, true},              // b without namespace may be kube-system/b
		{"kube-system/c", Cluster, false}, // onto to-b's from: a chain, not a fight
		{"tenant/b", "kube-system/c", false},
		{"kube-system/c", "kube-system/d", false},
	} {
		err := Conflict(Spec{From: tc.from, To: tc.to}, existing)
		if (err != nil) != tc.refused {
			t.Errorf("%s -> %s beside %s -> %s: %v, want refused %v", tc.from, tc.to, Cluster, "kube-system/b", err, tc.refused)
		}
		if err != nil && !strings.Contains(err.Error(), "to-b") {
			t.Errorf("%s -> %s: error %q does not name the other migration", tc.from, tc.to, err)
		}
	}
}
