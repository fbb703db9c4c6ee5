package executor

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/store"
)

func record(nets ...string) *store.Sandbox {
	sb := &store.Sandbox{}
	for i, n := range nets {
		sb.Attachments = append(sb.Attachments, store.Attachment{Spec: attachment.Spec{
			Network: n, IfName: fmt.Sprintf("net%d", i), Primary: i == 0}, State: store.Added})
	}
	return sb
}

func TestWaves(t *testing.T) {
	sb := record("cluster", "a", "b", "a", "c")
	for _, c := range []struct {
		parallel bool
		add, del string
	}{
		{false, "[[[0 1 2 3 4]]]", "[[[4 3 2 1 0]]]"},
		// The primary alone first; one lane per network, its attachments in order.
		{true, "[[[0]] [[1 3] [2] [4]]]", "[[[3 1] [2] [4]] [[0]]]"},
	} {
		if got := fmt.Sprint(waves(sb, c.parallel)); got != c.add {
			t.Errorf("parallel=%v: ADD waves %s, want %s", c.parallel, got, c.add)
		}
		if got := fmt.Sprint(delWaves(sb, c.parallel)); got != c.del {
			t.Errorf("parallel=%v: DEL waves %s, want %s", c.parallel, got, c.del)
		}
	}
	// A record a switch touched is deleted in order.
	sb.Attachments[1].State = store.Retained
	if got := fmt.Sprint(delWaves(sb, true)); got != "[[[4 3 2 1 0]]]" {
		t.Errorf("DEL waves with a retained attachment %s", got)
	}
	// Without a primary (a damaged record's cached attachments) every
	// network is a lane of the first wave.
	sb = record("x", "y")
	sb.Attachments[0].Primary = false
	if got := fmt.Sprint(waves(sb, true)); got != "[[[0] [1]]]" {
		t.Errorf("waves without a primary: %s", got)
	}
	if got := fmt.Sprint(delWaves(sb, true)); got != "[[[1 0]]]" {
		t.Errorf("DEL waves without a primary: %s", got)
	}
}

func TestRunWaves(t *testing.T) {
	// Lanes run at the same time: two steps that each wait for the other.
	var wg sync.WaitGroup
	wg.Add(2)
	done := make(chan struct{})
	go func() {
		errs, _ := runWaves([][][]int{{{0}, {1}}}, 2, true, func(int) error {
			wg.Done()
			wg.Wait()
			return nil
		})
		if errors.Join(errs...) != nil {
			t.Error(errs)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("lanes did not run concurrently")
	}

	// stopOnError: a failure stops what has not started (the rest of its
	// lane, later waves); without it every step is attempted.
	w := [][][]int{{{0}}, {{1, 2}}, {{3}}}
	fail := func(i int) error {
		if i == 1 {
			return errors.New("boom")
		}
		return nil
	}
	errs, attempted := runWaves(w, 4, true, fail)
	if fmt.Sprint(attempted) != "[true true false false]" || errs[1] == nil {
		t.Errorf("stopOnError: attempted %v errs %v", attempted, errs)
	}
	errs, attempted = runWaves(w, 4, false, fail)
	if fmt.Sprint(attempted) != "[true true true true]" || errs[1] == nil || errs[2] != nil {
		t.Errorf("attempt all: attempted %v errs %v", attempted, errs)
	}
}
