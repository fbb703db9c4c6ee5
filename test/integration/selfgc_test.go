package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/rewire-cni/rewire/pkg/kube"
	"github.com/rewire-cni/rewire/pkg/selection"
)

// fakeCRI stands in for the container runtime's CRI RuntimeService. The
// real containerd cannot run here (make e2e runs Rewire under one), so it
// serves ListPodSandbox only (every other call is Unimplemented) and
// reports the sandboxes the test says exist, plus an infra one (the
// runtime of a real node always has some).
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	mu    sync.Mutex
	ids   []string
	calls int
}

func (f *fakeCRI) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	items := []*runtimeapi.PodSandbox{{Id: "infra", State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "kube-system", Name: "infra"}}}
	for _, id := range f.ids {
		items = append(items, &runtimeapi.PodSandbox{Id: id, State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

// set makes the runtime report these sandboxes; it returns the number of
// listings so far.
func (f *fakeCRI) set(ids ...string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = ids
	return f.calls
}

func (f *fakeCRI) listings() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// startFakeCRI serves a fakeCRI on a unix socket until the test ends.
func startFakeCRI(t *testing.T) (*fakeCRI, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	fake := &fakeCRI{}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, fake)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return fake, sock
}

// Self-GC: two pods' sandboxes vanish from the runtime without a CNI DEL
// (one pod object still exists, the other's is gone too), a third stays.
// Within the grace period nothing is released; then the vanished ones are
// released through the DEL path (host-local allocations of both networks,
// host veth, interfaces, record), with an Event on the pod that still
// exists and a log line for the other, and the metric; the third pod is
// untouched.
func TestSelfGCReleasesVanishedSandboxes(t *testing.T) {
	const grace = 8 * time.Second
	fake, sock := startFakeCRI(t)
	e := newEnv(t, envOpts{extraConfig: fmt.Sprintf("criSocket: unix://%s\ngcInterval: 300ms\ngcGrace: %s\n", sock, grace)})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.52"), nil)
	ann := map[string]string{selection.NetworksAnnotation: "mv"}
	kept, gone, vanished := e.newPod("default", "selfgc-kept", ann), e.newPod("default", "selfgc-gone", ann), e.newPod("default", "selfgc-vanished", ann)
	all := []*harnessPod{kept, gone, vanished}
	fake.set(kept.ContainerID, gone.ContainerID, vanished.ContainerID)
	ctx := context.Background()
	added := time.Now()
	for _, p := range all {
		_, err := e.rt.Add(ctx, p)
		must(t, err)
	}
	held := map[*harnessPod][]string{} // host-local files: network/IP
	veth := map[*harnessPod]string{}   // host end of eth0
	for _, p := range all {
		held[p] = allocationsOf(t, e, p)
		veth[p] = hostPeer(t, p, "eth0")
		if len(held[p]) != 2 || veth[p] == "" {
			t.Fatalf("%s: allocations %v, host veth %q: want one address per network and a host veth", p.Name, held[p], veth[p])
		}
	}
	// The pod object of one vanished sandbox is gone too (and from rewired's cache).
	zero := int64(0)
	must(t, api.Client.CoreV1().Pods("default").Delete(ctx, vanished.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	pollUntil(t, 10*time.Second, "selfgc-vanished gone from rewired's pod cache", func() error {
		if _, ok, err := e.daemon.PodView("default", vanished.Name); err != nil || ok {
			return fmt.Errorf("still cached (%v)", err)
		}
		return nil
	})

	from := fake.set(kept.ContainerID)
	// Within the grace period the runtime's word is not enough.
	pollUntil(t, 10*time.Second, "two self-GC passes", func() error {
		if n := fake.listings(); n < from+2 {
			return fmt.Errorf("%d listings since", n-from)
		}
		return nil
	})
	if young := time.Since(added) < grace-time.Second; young {
		for _, p := range []*harnessPod{gone, vanished} {
			if !onDisk(recordPath(e, p)) {
				t.Fatalf("%s released within the grace period", p.Name)
			}
		}
	} else {
		t.Logf("the machine is slow: %s since the ADDs, the grace period check is skipped", time.Since(added).Round(time.Millisecond))
	}

	pollUntil(t, grace+20*time.Second, "the vanished sandboxes' records released", func() error {
		for _, p := range []*harnessPod{gone, vanished} {
			if onDisk(recordPath(e, p)) {
				return fmt.Errorf("%s still recorded", p.Name)
			}
		}
		return nil
	})
	for _, p := range []*harnessPod{gone, vanished} {
		for _, f := range held[p] {
			if onDisk(filepath.Join(e.ipamDir, f)) {
				t.Errorf("%s: host-local still holds %s", p.Name, f)
			}
		}
		if _, err := netlinksafe.LinkByName(veth[p]); err == nil {
			t.Errorf("%s: host veth %s left", p.Name, veth[p])
		}
		if links, _ := podLinks(t, p); len(links) != 0 {
			t.Errorf("%s: interfaces left in the netns: %v", p.Name, keys(links))
		}
	}
	msg := waitEvent(t, gone, kube.ReasonStaleReleased)
	if !strings.Contains(msg, gone.ContainerID) || !strings.Contains(msg, "net1 on default/mv") {
		t.Errorf("Event message %q does not name the sandbox and its attachments", msg)
	}
	evs, err := api.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + vanished.Name + ",reason=" + kube.ReasonStaleReleased})
	must(t, err)
	if len(evs.Items) != 0 {
		t.Errorf("an Event on a pod whose object is gone: %s", evs.Items[0].Message)
	}
	if log := e.daemon.Log(); !hasLogLine(log, "self-GC: released", vanished.ContainerID) || !hasLogLine(log, "self-GC: released", gone.ContainerID) {
		t.Errorf("no release log line for each sandbox:\n%s", tail(log, 30))
	}
	if v, err := e.daemon.Metric(`rewire_self_gc_sandboxes_total{result="released"}`); err != nil || v != 2 {
		t.Errorf(`rewire_self_gc_sandboxes_total{result="released"} = %v (%v), want 2`, v, err)
	}

	// The pod the runtime still has is untouched.
	if !onDisk(recordPath(e, kept)) {
		t.Error("the kept pod's record was released")
	}
	for _, f := range held[kept] {
		if !onDisk(filepath.Join(e.ipamDir, f)) {
			t.Errorf("the kept pod's allocation %s was released", f)
		}
	}
	if got := allocationsOf(t, e, kept); !slices.Equal(got, held[kept]) {
		t.Errorf("kept pod's addresses %v, were %v", got, held[kept])
	}
	if _, err := netlinksafe.LinkByName(veth[kept]); err != nil {
		t.Errorf("the kept pod's host veth %s: %v", veth[kept], err)
	}
	must(t, e.rt.Check(ctx, kept))

	// The runtime stand-in's own DELs: the kept pod's, and the vanished
	// ones' (nothing left for Rewire; the stand-in drops its cache).
	for _, p := range all {
		must(t, e.rt.Del(ctx, p))
	}
	e.assertNoLeaks()
}

// allocationsOf are the host-local files (NETWORK/IP under the env's IPAM
// dir) holding the addresses of the pod's interfaces, sorted.
func allocationsOf(t *testing.T, e *env, p *harnessPod) []string {
	t.Helper()
	links, err := podLinks(t, p)
	must(t, err)
	var ips []string
	for _, l := range links {
		for _, a := range l.Addrs {
			if ip, _, err := net.ParseCIDR(a); err == nil && ip.IsGlobalUnicast() {
				ips = append(ips, ip.String())
			}
		}
	}
	var out []string
	for _, f := range e.allocations() {
		if slices.Contains(ips, filepath.Base(f)) {
			rel, err := filepath.Rel(e.ipamDir, f)
			if err != nil || strings.HasPrefix(rel, "..") {
				rel = f // already relative
			}
			out = append(out, rel)
		}
	}
	slices.Sort(out)
	return out
}

// hostPeer is the name of the host end of the pod's veth ifName ("" when
// it is not a veth).
func hostPeer(t *testing.T, p *harnessPod, ifName string) string {
	t.Helper()
	var peer int
	must(t, p.NetNS.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return err
		}
		if _, ok := l.(*netlink.Veth); ok {
			peer = l.Attrs().ParentIndex
		}
		return nil
	}))
	if peer == 0 {
		return ""
	}
	var name string
	hostDo(t, func() error {
		l, err := netlink.LinkByIndex(peer)
		if err == nil {
			name = l.Attrs().Name
		}
		return err
	})
	return name
}

func recordPath(e *env, p *harnessPod) string {
	return filepath.Join(e.daemon.StateDir, "sandboxes", p.ContainerID+".json")
}

func onDisk(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// hasLogLine says whether one log line has all the given parts.
func hasLogLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// pollUntil polls f until it returns nil, failing the test after timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// In a dry run self-GC only reports a vanished sandbox (log line, metric,
// once); and with the runtime unreachable it releases nothing at all.
// Either way the sandbox's attachments and record stay.
func TestSelfGCDryRunAndRuntimeDown(t *testing.T) {
	fake, sock := startFakeCRI(t)
	cfg := func(dryRun bool) string {
		return fmt.Sprintf("criSocket: %s\ngcInterval: 200ms\ngcGrace: 1s\ngcDryRun: %v\n", sock, dryRun)
	}
	e := newEnv(t, envOpts{extraConfig: cfg(true)})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.53"), nil)
	p := e.newPod("default", "selfgc-dry", map[string]string{selection.NetworksAnnotation: "mv"})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	held := allocationsOf(t, e, p)
	intact := func(when string) {
		t.Helper()
		if !onDisk(recordPath(e, p)) {
			t.Fatalf("%s: the record was released", when)
		}
		if got := allocationsOf(t, e, p); len(got) != 2 || !slices.Equal(got, held) {
			t.Fatalf("%s: allocations %v, were %v", when, got, held)
		}
		must(t, e.rt.Check(ctx, p))
	}

	fake.set() // the runtime no longer has it
	pollUntil(t, 20*time.Second, "the dry run's report", func() error {
		if !hasLogLine(e.daemon.Log(), "self-GC (dry run): would release", p.ContainerID) {
			return errors.New("no log line yet")
		}
		return nil
	})
	from := fake.listings()
	pollUntil(t, 10*time.Second, "more passes", func() error {
		if n := fake.listings(); n < from+3 {
			return fmt.Errorf("%d listings since", n-from)
		}
		return nil
	})
	intact("dry run")
	if v, err := e.daemon.Metric(`rewire_self_gc_sandboxes_total{result="dry_run"}`); err != nil || v != 1 {
		t.Errorf(`rewire_self_gc_sandboxes_total{result="dry_run"} = %v (%v), want 1 (once per sandbox)`, v, err)
	}
	if n := strings.Count(e.daemon.Log(), "self-GC (dry run): would release"); n != 1 {
		t.Errorf("%d dry-run report lines, want 1", n)
	}

	// The runtime is down: no pass releases anything.
	must(t, os.Remove(sock)) // nobody listens there any more
	e.daemon.Stop()
	must(t, writeConfig(e, strings.Replace(fileText(t, e.daemon.ConfigFile), "gcDryRun: true", "gcDryRun: false", 1)))
	must(t, e.daemon.Start())
	pollUntil(t, 20*time.Second, "failed passes", func() error {
		if v, err := e.daemon.Metric(`rewire_self_gc_runs_total{result="error"}`); err != nil || v < 3 {
			return fmt.Errorf("%v error passes (%v)", v, err)
		}
		return nil
	})
	intact("runtime down")
	if !hasLogLine(e.daemon.Log(), "self-GC pass skipped, nothing released", sock) {
		t.Errorf("no log line naming the unreachable runtime:\n%s", tail(e.daemon.Log(), 10))
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

func fileText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return string(b)
}
