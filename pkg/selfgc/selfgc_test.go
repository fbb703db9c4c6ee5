package selfgc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/metrics"
	"github.com/rewire-cni/rewire/pkg/store"
)

// fakeLister is the runtime: its sandboxes, or its error.
type fakeLister struct {
	sandboxes []Sandbox
	err       error
}

func (f *fakeLister) ListSandboxes(context.Context) ([]Sandbox, error) { return f.sandboxes, f.err }

type event struct{ pod, eventType, reason, msg string }

type fakeEvents struct{ got []event }

func (f *fakeEvents) Pod(namespace, name string, _ ktypes.UID, eventType, reason, msg string) {
	f.got = append(f.got, event{namespace + "/" + name, eventType, reason, msg})
}

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// record is a completed sandbox of pod default/NAME (uid NAME-uid) made
// age ago, with an eth0 attachment.
func record(name string, age time.Duration) *store.Sandbox {
	return &store.Sandbox{
		ContainerID: "c-" + name, PodNamespace: "default", PodName: name, PodUID: name + "-uid",
		Complete: true, Created: now.Add(-age),
		Attachments: []store.Attachment{{Spec: attachment.Spec{Network: "cluster", IfName: "eth0"}, State: store.Added}},
	}
}

// running is the runtime's sandbox of a record, and of rewired's own pod.
func running(sb *store.Sandbox) Sandbox {
	return Sandbox{ID: sb.ContainerID, Namespace: sb.PodNamespace, Name: sb.PodName, UID: sb.PodUID}
}

var self = Sandbox{ID: "rewired-sandbox", Namespace: "kube-system", Name: "rewire-abcde"}

func TestCollect(t *testing.T) {
	old, young := record("old", time.Hour), record("young", time.Minute)
	incomplete := record("adding", time.Hour)
	incomplete.Complete = false
	notPod := record("", time.Hour)
	notPod.ContainerID = "c-not-a-pod"
	noTime := record("no-time", 0)
	noTime.Created = time.Time{}
	cases := []struct {
		name     string
		records  []*store.Sandbox
		runtime  fakeLister
		dryRun   bool
		notSelf  bool  // rewired does not run in a pod
		release  error // what releasing returns
		raced    bool  // the record went before the release (a DEL came)
		released []string
		stale    []string
		failed   []string
		err      string
		events   []string // reason on pod
		metric   string   // rewire_self_gc_sandboxes_total result that rises by the released/failed/stale count
	}{
		{name: "present: kept", records: []*store.Sandbox{old}, runtime: fakeLister{sandboxes: []Sandbox{self, running(old)}}},
		{name: "absent and old: released", records: []*store.Sandbox{old, young}, runtime: fakeLister{sandboxes: []Sandbox{self, running(young)}},
			released: []string{"c-old"}, stale: []string{"c-old"}, events: []string{kube.ReasonStaleReleased + " on default/old"}, metric: "released"},
		{name: "absent and young: kept", records: []*store.Sandbox{young}, runtime: fakeLister{sandboxes: []Sandbox{self}}},
		{name: "lister error: nothing released", records: []*store.Sandbox{old}, runtime: fakeLister{err: errors.New("connection refused")},
			err: "connection refused"},
		{name: "empty list: not trusted", records: []*store.Sandbox{old}, runtime: fakeLister{}, notSelf: true, err: "no pod sandbox at all"},
		{name: "own pod missing: not trusted", records: []*store.Sandbox{old}, runtime: fakeLister{sandboxes: []Sandbox{{ID: "x", Namespace: "a", Name: "b"}}},
			err: "own pod kube-system/rewire-abcde"},
		{name: "not in a pod: no own pod needed", records: []*store.Sandbox{old}, runtime: fakeLister{sandboxes: []Sandbox{{ID: "x"}}}, notSelf: true,
			released: []string{"c-old"}, stale: []string{"c-old"}, events: []string{kube.ReasonStaleReleased + " on default/old"}, metric: "released"},
		{name: "dry run: reported, nothing released", records: []*store.Sandbox{old}, runtime: fakeLister{sandboxes: []Sandbox{self}}, dryRun: true,
			stale: []string{"c-old"}, metric: "dry_run"},
		{name: "ADD running: kept", records: []*store.Sandbox{incomplete}, runtime: fakeLister{sandboxes: []Sandbox{self}}},
		{name: "not a pod's sandbox: kept", records: []*store.Sandbox{notPod}, runtime: fakeLister{sandboxes: []Sandbox{self}}},
		{name: "no creation time: young at first sight", records: []*store.Sandbox{noTime}, runtime: fakeLister{sandboxes: []Sandbox{self}}},
		{name: "release fails: reported, retried later", records: []*store.Sandbox{old}, runtime: fakeLister{sandboxes: []Sandbox{self}},
			release: errors.New("bridge: boom"), stale: []string{"c-old"}, failed: []string{"c-old"},
			events: []string{kube.ReasonStaleReleaseFailed + " on default/old"}, metric: "failed"},
		{name: "a DEL came first: not counted", records: []*store.Sandbox{old}, runtime: fakeLister{sandboxes: []Sandbox{self}}, raced: true,
			stale: []string{"c-old"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var releasedNow []string
			ev := &fakeEvents{}
			col := &Collector{
				Lister:  &c.runtime,
				Records: func() ([]*store.Sandbox, error) { return c.records, nil },
				Release: func(_ context.Context, sb *store.Sandbox) (bool, error) {
					releasedNow = append(releasedNow, sb.ContainerID)
					return !c.raced, c.release
				},
				Grace: 2 * time.Minute, DryRun: c.dryRun, SelfNamespace: self.Namespace, SelfName: self.Name,
				PodExists: func(ns, name, uid string) bool { return uid == name+"-uid" },
				Events:    ev, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now },
			}
			if c.notSelf {
				col.SelfNamespace, col.SelfName = "", ""
			}
			before := map[string]float64{}
			for _, r := range []string{"released", "failed", "dry_run"} {
				before[r] = metrics.SelfGCSandboxes.Value(r)
			}
			runsOK, runsErr := metrics.SelfGCRuns.Value("ok"), metrics.SelfGCRuns.Value("error")
			res, err := col.Collect(context.Background())
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Collect error %v, want %q", err, c.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			wantOK, wantErr := 1.0, 0.0
			if c.err != "" {
				wantOK, wantErr = 0, 1
			}
			if ok, bad := metrics.SelfGCRuns.Value("ok")-runsOK, metrics.SelfGCRuns.Value("error")-runsErr; ok != wantOK || bad != wantErr {
				t.Errorf("rewire_self_gc_runs_total rose by ok %v, error %v; want %v, %v", ok, bad, wantOK, wantErr)
			}
			if !slices.Equal(res.Released, c.released) || !slices.Equal(res.Stale, c.stale) || !slices.Equal(res.Failed, c.failed) {
				t.Errorf("released %v, stale %v, failed %v; want %v, %v, %v", res.Released, res.Stale, res.Failed, c.released, c.stale, c.failed)
			}
			wantCalls := c.stale
			if c.dryRun {
				wantCalls = nil
			}
			if !slices.Equal(releasedNow, wantCalls) {
				t.Errorf("Release called for %v, want %v", releasedNow, wantCalls)
			}
			var events []string
			for _, e := range ev.got {
				events = append(events, e.reason+" on "+e.pod)
				if !strings.Contains(e.msg, "eth0 on cluster") || !strings.Contains(e.msg, "c-old") {
					t.Errorf("Event message does not name the attachments and the sandbox: %q", e.msg)
				}
			}
			if !slices.Equal(events, c.events) {
				t.Errorf("events %v, want %v", events, c.events)
			}
			for _, r := range []string{"released", "failed", "dry_run"} {
				want := 0.0
				if r == c.metric {
					want = float64(max(len(c.released), len(c.failed), len(c.stale)))
				}
				if got := metrics.SelfGCSandboxes.Value(r) - before[r]; got != want {
					t.Errorf("rewire_self_gc_sandboxes_total{result=%q} rose by %v, want %v", r, got, want)
				}
			}
		})
	}
}

// A record without a creation time (an older rewired's) ages from when the
// collector first saw it; a pod object that is gone gets no Event.
func TestCollectAgesRecordsWithoutTime(t *testing.T) {
	sb := record("no-time", 0)
	sb.Created = time.Time{}
	clock := now
	ev := &fakeEvents{}
	var released []string
	col := &Collector{
		Lister:  &fakeLister{sandboxes: []Sandbox{{ID: "other"}}},
		Records: func() ([]*store.Sandbox, error) { return []*store.Sandbox{sb}, nil },
		Release: func(_ context.Context, sb *store.Sandbox) (bool, error) {
			released = append(released, sb.ContainerID)
			return true, nil
		},
		Grace: 2 * time.Minute, PodExists: func(string, string, string) bool { return false }, Events: ev,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return clock },
	}
	for _, step := range []struct {
		after time.Duration
		want  []string
	}{{0, nil}, {time.Minute, nil}, {2 * time.Minute, []string{"c-no-time"}}} {
		clock = now.Add(step.after)
		released = nil
		if _, err := col.Collect(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(released, step.want) {
			t.Fatalf("%s after first sight: released %v, want %v", step.after, released, step.want)
		}
	}
	if len(ev.got) != 0 {
		t.Errorf("Events on a pod that is gone: %v", ev.got)
	}
}

// In a dry run a stale sandbox is counted once, however many passes find
// it, and nothing is released.
func TestDryRunCountsOnce(t *testing.T) {
	old := record("old", time.Hour)
	col := &Collector{
		Lister:  &fakeLister{sandboxes: []Sandbox{{ID: "other"}}},
		Records: func() ([]*store.Sandbox, error) { return []*store.Sandbox{old}, nil },
		Release: func(context.Context, *store.Sandbox) (bool, error) {
			t.Fatal("a dry run released")
			return false, nil
		},
		Grace: time.Minute, DryRun: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	before := metrics.SelfGCSandboxes.Value("dry_run")
	for range 3 {
		res, err := col.Collect(context.Background())
		if err != nil || !slices.Equal(res.Stale, []string{"c-old"}) {
			t.Fatalf("Collect = %+v, %v", res, err)
		}
	}
	if got := metrics.SelfGCSandboxes.Value("dry_run") - before; got != 1 {
		t.Errorf("dry_run counted %v times, want once", got)
	}
}
