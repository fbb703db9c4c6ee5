package inspect

import (
	"testing"

	"github.com/rewire-cni/rewire/pkg/store"
)

// kubectl-rewire, which cannot import the store (Linux only), tells a
// retained attachment by this constant.
func TestRetainedIsTheStoreState(t *testing.T) {
	if Retained != string(store.Retained) {
		t.Fatalf("inspect.Retained %q, store.Retained %q", Retained, store.Retained)
	}
}
