package migration

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// A node reports the pods being switched now apart (they stay in Remaining).
func TestNodeStatusSwitching(t *testing.T) {
	r := &run{pods: map[types.UID]*podState{
		"a": {ref: "ns/a", phase: pending},
		"b": {ref: "ns/b", phase: switching},
		"c": {ref: "ns/c", phase: switched},
	}}
	ns := r.nodeStatus()
	if ns.Total != 3 || ns.Remaining != 2 || ns.Switching != 1 || ns.Switched != 1 {
		t.Errorf("node status %+v, want 3 total, 2 remaining of which 1 switching, 1 switched", ns)
	}
}
