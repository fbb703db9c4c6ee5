package executor

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/pkg/store"
)

// After a restart a pod's newest sandbox is the one hot-plug and switch act
// on, whatever order the records are read in.
func TestRecoverIndexesNewestSandbox(t *testing.T) {
	for _, tc := range []struct{ older, newer string }{
		{"b-old", "a-new"}, // the older record is read last
		{"a-old", "b-new"},
	} {
		st := newStore(t)
		now := time.Now()
		for id, created := range map[string]time.Time{tc.older: now.Add(-time.Hour), tc.newer: now} {
			must(t, st.Commit(&store.Sandbox{ContainerID: id, PodUID: "uid-1", Complete: true, Created: created}))
		}
		e := New(nil, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if _, err := e.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := e.ByPod("uid-1"); got != tc.newer {
			t.Errorf("records %s (older) and %s (newer): the pod's sandbox is %q", tc.older, tc.newer, got)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
